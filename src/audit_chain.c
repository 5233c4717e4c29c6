/*
 * audit_chain.c — the audit trail's arithmetic, pure C over structs: the
 * canonical byte encoding of a record, its SHA-256 chain hash, and the Merkle
 * tree (RFC 6962) over a chain's record hashes.  docs/audit.md documents the
 * encoding byte by byte; scripts/audit-check recomputes it in Python.
 */
#include "audit.h"

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/memutils.h"

void
audit_hasher_init(AuditHasher *h)
{
	h->ctx = pg_cryptohash_create(PG_SHA256);
	if (h->ctx == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
}

void
audit_hasher_free(AuditHasher *h)
{
	if (h->ctx != NULL)
		pg_cryptohash_free(h->ctx);
	h->ctx = NULL;
}

void
audit_sha256(AuditHasher *h, const uint8 *data, size_t len, uint8 *out)
{
	if (pg_cryptohash_init(h->ctx) < 0 || pg_cryptohash_update(h->ctx, data, len) < 0 ||
		pg_cryptohash_final(h->ctx, out, AUDIT_HASH_LEN) < 0)
		elog(ERROR, "SHA-256 failed: %s", pg_cryptohash_error(h->ctx));
}

static inline void
put_u32(StringInfo s, uint32 v)
{
	uint8		b[4] = {(uint8) (v >> 24), (uint8) (v >> 16), (uint8) (v >> 8), (uint8) v};

	appendBinaryStringInfo(s, (const char *) b, 4);
}

static inline void
put_u64(StringInfo s, uint64 v)
{
	put_u32(s, (uint32) (v >> 32));
	put_u32(s, (uint32) v);
}

/* A string: its length (4 bytes, big-endian) and its UTF-8 bytes; NULL is length 0xFFFFFFFF. */
static inline void
put_string(StringInfo s, const char *str, int len)
{
	if (str == NULL)
	{
		put_u32(s, 0xFFFFFFFFu);
		return;
	}
	put_u32(s, (uint32) len);
	appendBinaryStringInfo(s, str, len);
}

/* Microseconds since 1970-01-01 00:00:00 UTC (PostgreSQL counts from 2000). */
static inline int64
unix_micros(TimestampTz t)
{
	return t + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
}

static void
encode(StringInfo s, const uint8 *prev, const AuditRecord *r)
{
	appendBinaryStringInfo(s, AUDIT_ENCODING_TAG, 4);
	appendBinaryStringInfo(s, (const char *) prev, AUDIT_HASH_LEN);
	put_u64(s, (uint64) r->seq);
	put_u64(s, (uint64) unix_micros(r->at));
	put_u64(s, r->txid);
	appendBinaryStringInfo(s, (const char *) r->tenant.data, UUID_LEN);
	put_string(s, r->actor_role, r->actor_role_len);
	put_string(s, r->actor_sub, r->actor_sub_len);
	appendStringInfoChar(s, r->has_actor_tenant ? 1 : 0);
	if (r->has_actor_tenant)
		appendBinaryStringInfo(s, (const char *) r->actor_tenant.data, UUID_LEN);
	put_string(s, r->table_name, r->table_name_len);
	appendStringInfoChar(s, r->op);
	put_string(s, r->key, r->key_len);
	appendBinaryStringInfo(s, (const char *) r->payload_hash, AUDIT_HASH_LEN);
}

void
audit_record_hash(AuditHasher *h, const uint8 *prev, const AuditRecord *r, uint8 *out)
{
	/* One buffer for every record a backend hashes: verify hashes millions. */
	static StringInfoData buf;

	if (buf.data == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

		initStringInfo(&buf);
		MemoryContextSwitchTo(old);
	}
	resetStringInfo(&buf);
	encode(&buf, prev, r);
	audit_sha256(h, (const uint8 *) buf.data, buf.len, out);
	/* A record with a huge key must not keep a huge buffer. */
	if (buf.maxlen > 64 * 1024)
	{
		pfree(buf.data);
		buf.data = NULL;
	}
}

bytea *
audit_record_encoding(const uint8 *prev, const AuditRecord *r)
{
	StringInfoData s;
	bytea	   *result;

	initStringInfo(&s);
	encode(&s, prev, r);
	result = palloc(VARHDRSZ + s.len);
	SET_VARSIZE(result, VARHDRSZ + s.len);
	memcpy(VARDATA(result), s.data, s.len);
	pfree(s.data);
	return result;
}

/* ---- RFC 6962 Merkle tree: leaf = H(0x00 || record hash), node = H(0x01 || left || right) ---- */

void
audit_merkle_leaf(AuditHasher *h, const uint8 *record_hash, uint8 *out)
{
	uint8		b[1 + AUDIT_HASH_LEN];

	b[0] = 0x00;
	memcpy(b + 1, record_hash, AUDIT_HASH_LEN);
	audit_sha256(h, b, sizeof(b), out);
}

void
audit_merkle_node(AuditHasher *h, const uint8 *left, const uint8 *right, uint8 *out)
{
	uint8		b[1 + 2 * AUDIT_HASH_LEN];

	b[0] = 0x01;
	memcpy(b + 1, left, AUDIT_HASH_LEN);
	memcpy(b + 1 + AUDIT_HASH_LEN, right, AUDIT_HASH_LEN);
	audit_sha256(h, b, sizeof(b), out);
}

/* The largest power of two below n (n > 1). */
static inline int64
split_point(int64 n)
{
	int64		k = 1;

	while (k << 1 < n)
		k <<= 1;
	return k;
}

/* MTH(D[0..n)) of record hashes; n >= 1. */
static void
mth(AuditHasher *h, const uint8 *leaves, int64 n, uint8 *out)
{
	int64		k;
	uint8		left[AUDIT_HASH_LEN],
				right[AUDIT_HASH_LEN];

	check_stack_depth();
	if (n == 1)
	{
		audit_merkle_leaf(h, leaves, out);
		return;
	}
	k = split_point(n);
	mth(h, leaves, k, left);
	mth(h, leaves + k * AUDIT_HASH_LEN, n - k, right);
	audit_merkle_node(h, left, right, out);
}

void
audit_merkle_root(AuditHasher *h, const uint8 *leaves, int64 n, uint8 *out)
{
	if (n == 0)
		audit_sha256(h, (const uint8 *) "", 0, out);
	else
		mth(h, leaves, n, out);
}

void
audit_merkle_path(AuditHasher *h, const uint8 *leaves, int64 n, int64 m, uint8 *path, int *npath)
{
	int64		k;

	check_stack_depth();
	if (n <= 1)
		return;
	k = split_point(n);
	if (m < k)
	{
		audit_merkle_path(h, leaves, k, m, path, npath);
		mth(h, leaves + k * AUDIT_HASH_LEN, n - k, path + (*npath) * AUDIT_HASH_LEN);
	}
	else
	{
		audit_merkle_path(h, leaves + k * AUDIT_HASH_LEN, n - k, m - k, path, npath);
		mth(h, leaves, k, path + (*npath) * AUDIT_HASH_LEN);
	}
	(*npath)++;
}
