/*
 * audit_chain.c — the audit trail's arithmetic, pure C over structs: the
 * canonical byte encoding of a record, its SHA-256 chain hash, and the Merkle
 * tree (RFC 6962) over a chain's record hashes.  docs/audit.md documents the
 * encoding byte by byte; scripts/audit-check recomputes it in Python.
 */
#include "audit.h"


#include <openssl/evp.h>
#include "miscadmin.h"
#include "utils/memutils.h"

static EVP_MD *sha256_md = NULL;
static EVP_MD_CTX *sha256_ctx = NULL;

void
audit_hasher_init(AuditHasher *h)
{
	/* Made once per backend and kept: an error between two hashes leaks nothing. */
	if (sha256_md == NULL)
		sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
	if (sha256_ctx == NULL)
		sha256_ctx = EVP_MD_CTX_new();
	if (sha256_md == NULL || sha256_ctx == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("SHA-256 is not available from OpenSSL")));
	h->ctx = sha256_ctx;
}

void
audit_hasher_free(AuditHasher *h)
{
	h->ctx = NULL;
}

void
audit_sha256(AuditHasher *h, const uint8 *data, size_t len, uint8 *out)
{
	unsigned int n = 0;

	if (EVP_DigestInit_ex2(h->ctx, sha256_md, NULL) != 1 || EVP_DigestUpdate(h->ctx, data, len) != 1 ||
		EVP_DigestFinal_ex(h->ctx, out, &n) != 1 || n != AUDIT_HASH_LEN)
		elog(ERROR, "SHA-256 failed");
}

static inline uint8 *
put_u32(uint8 *p, uint32 v)
{
	p[0] = (uint8) (v >> 24);
	p[1] = (uint8) (v >> 16);
	p[2] = (uint8) (v >> 8);
	p[3] = (uint8) v;
	return p + 4;
}

static inline uint8 *
put_u64(uint8 *p, uint64 v)
{
	return put_u32(put_u32(p, (uint32) (v >> 32)), (uint32) v);
}

static inline uint8 *
put_bytes(uint8 *p, const void *data, size_t len)
{
	memcpy(p, data, len);
	return p + len;
}

/* A string: its length (4 bytes, big-endian) and its UTF-8 bytes; NULL is length 0xFFFFFFFF. */
static inline uint8 *
put_string(uint8 *p, const char *str, int len)
{
	if (str == NULL)
		return put_u32(p, 0xFFFFFFFFu);
	return put_bytes(put_u32(p, (uint32) len), str, len);
}

/* Microseconds since 1970-01-01 00:00:00 UTC (PostgreSQL counts from 2000). */
static inline int64
unix_micros(TimestampTz t)
{
	return t + (int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * USECS_PER_DAY;
}

static size_t
encoded_size(const AuditRecord *r)
{
	return 4 + AUDIT_HASH_LEN + 8 + 8 + 8 + UUID_LEN + 4 + r->actor_role_len + 4 +
		(r->actor_sub ? r->actor_sub_len : 0) + 1 + (r->has_actor_tenant ? UUID_LEN : 0) + 4 +
		r->table_name_len + 1 + 4 + r->key_len + AUDIT_HASH_LEN;
}

/* The encoding FCA1 (docs/audit.md, "Encoding") into buf, which has encoded_size(r) bytes. */
static void
encode(uint8 *buf, const uint8 *prev, const AuditRecord *r)
{
	uint8	   *p = buf;

	p = put_bytes(p, AUDIT_ENCODING_TAG, 4);
	p = put_bytes(p, prev, AUDIT_HASH_LEN);
	p = put_u64(p, (uint64) r->seq);
	p = put_u64(p, (uint64) unix_micros(r->at));
	p = put_u64(p, r->txid);
	p = put_bytes(p, r->tenant.data, UUID_LEN);
	p = put_string(p, r->actor_role, r->actor_role_len);
	p = put_string(p, r->actor_sub, r->actor_sub_len);
	*p++ = r->has_actor_tenant ? 1 : 0;
	if (r->has_actor_tenant)
		p = put_bytes(p, r->actor_tenant.data, UUID_LEN);
	p = put_string(p, r->table_name, r->table_name_len);
	*p++ = (uint8) r->op;
	p = put_string(p, r->key, r->key_len);
	p = put_bytes(p, r->payload_hash, AUDIT_HASH_LEN);
	Assert((size_t) (p - buf) == encoded_size(r));
}

void
audit_record_hash(AuditHasher *h, const uint8 *prev, const AuditRecord *r, uint8 *out)
{
	uint8		small[512];
	size_t		n = encoded_size(r);
	uint8	   *buf = n <= sizeof(small) ? small : palloc(n);

	encode(buf, prev, r);
	audit_sha256(h, buf, n, out);
	if (buf != small)
		pfree(buf);
}

bytea *
audit_record_encoding(const uint8 *prev, const AuditRecord *r)
{
	size_t		n = encoded_size(r);
	bytea	   *result = palloc(VARHDRSZ + n);

	SET_VARSIZE(result, VARHDRSZ + n);
	encode((uint8 *) VARDATA(result), prev, r);
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

/*
 * MTH(D[a .. a+n)) of the leaves L: a record hash for each leaf from
 * L->first on; before it (a retention cut) only the roots of the compact
 * range of D[0 .. first), whose perfect subtrees are the only nodes there a
 * tree or a proof of later leaves needs (every aligned block left of a leaf
 * at or after the cut is one of them, or straddles the cut).
 */
static void
mth(AuditHasher *h, const MerkleLeaves *L, int64 a, int64 n, uint8 *out)
{
	int64		k;
	uint8		left[AUDIT_HASH_LEN],
				right[AUDIT_HASH_LEN];

	check_stack_depth();
	if (a < L->first)
	{
		/* The compact range's pieces are the binary decomposition of first, largest first. */
		int64		start = 0;
		int			i = 0;

		for (int bit = 62; bit >= 0; bit--)
		{
			int64		size = (int64) 1 << bit;

			if (!(L->first & size))
				continue;
			if (start == a && size == n)
			{
				memcpy(out, L->pieces + i * AUDIT_HASH_LEN, AUDIT_HASH_LEN);
				return;
			}
			start += size;
			i++;
		}
		if (a + n <= L->first)
			ereport(ERROR,
					(errcode(ERRCODE_FC_AUDIT_RECORD_NOT_FOUND),
					 errmsg("records " INT64_FORMAT " to " INT64_FORMAT " were dropped by retention", a + 1, a + n)));
	}
	else if (n == 1)
	{
		audit_merkle_leaf(h, L->hashes + (a - L->first) * AUDIT_HASH_LEN, out);
		return;
	}
	k = split_point(n);
	mth(h, L, a, k, left);
	mth(h, L, a + k, n - k, right);
	audit_merkle_node(h, left, right, out);
}

void
audit_merkle_root(AuditHasher *h, const MerkleLeaves *L, int64 n, uint8 *out)
{
	if (n == 0)
		audit_sha256(h, (const uint8 *) "", 0, out);
	else
		mth(h, L, 0, n, out);
}

/* PATH(m, D[a .. a+n)), appended to path (RFC 6962, 2.1.1). */
static void
path_of(AuditHasher *h, const MerkleLeaves *L, int64 a, int64 n, int64 m, uint8 *path, int *npath)
{
	int64		k;

	check_stack_depth();
	if (n <= 1)
		return;
	k = split_point(n);
	if (m < k)
	{
		path_of(h, L, a, k, m, path, npath);
		mth(h, L, a + k, n - k, path + (*npath) * AUDIT_HASH_LEN);
	}
	else
	{
		path_of(h, L, a + k, n - k, m - k, path, npath);
		mth(h, L, a, k, path + (*npath) * AUDIT_HASH_LEN);
	}
	(*npath)++;
}

void
audit_merkle_path(AuditHasher *h, const MerkleLeaves *L, int64 n, int64 m, uint8 *path, int *npath)
{
	path_of(h, L, 0, n, m, path, npath);
}
