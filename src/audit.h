/*
 * audit.h — the tamper-evident audit trail (docs/audit.md): the canonical
 * encoding of a record and its hash (audit_chain.c, pure C over structs), the
 * Merkle tree over a chain's record hashes (RFC 6962), and what other modules
 * call to append a record (audit_api.c).
 */
#ifndef FINCORE_AUDIT_H
#define FINCORE_AUDIT_H

#include "fincore.h"
#include "utils/jsonb.h"
#include "utils/relcache.h"

#define AUDIT_HASH_LEN		32
/* The version tag that starts every record's encoding: a new encoding gets a new tag. */
#define AUDIT_ENCODING_TAG	"FCA1"

/* The operations a record can be of. */
#define AUDIT_OP_INSERT		'I'
#define AUDIT_OP_UPDATE		'U'
#define AUDIT_OP_DELETE		'D'
#define AUDIT_OP_TRUNCATE	'T'
#define AUDIT_OP_REDACT		'R'

/* A record as the chain hashes it: every field the encoding covers. */
typedef struct AuditRecord
{
	pg_uuid_t	tenant;			/* the chain: the nil uuid for global objects */
	int64		seq;			/* 1, 2, ... gap-free in its chain */
	TimestampTz at;
	uint64		txid;			/* the writer's full transaction id */
	const char *actor_role;		/* the database role */
	int			actor_role_len;
	const char *actor_sub;		/* the JWT subject, or NULL */
	int			actor_sub_len;
	bool		has_actor_tenant;	/* the claims' tenant, if any */
	pg_uuid_t	actor_tenant;
	const char *table_name;
	int			table_name_len;
	char		op;
	const char *key;
	int			key_len;
	uint8		payload_hash[AUDIT_HASH_LEN];
} AuditRecord;

/*
 * SHA-256 through OpenSSL's EVP with the algorithm fetched once per backend
 * and one context reused: PostgreSQL's pg_cryptohash looks the algorithm up
 * at every hash, which was most of audit_verify's time.
 */
typedef struct AuditHasher
{
	void	   *ctx;			/* EVP_MD_CTX */
} AuditHasher;

extern void audit_hasher_init(AuditHasher *h);
extern void audit_hasher_free(AuditHasher *h);
extern void audit_sha256(AuditHasher *h, const uint8 *data, size_t len, uint8 *out);
/* The record's hash: SHA-256 of its encoding after prev (docs/audit.md, "Encoding"). */
extern void audit_record_hash(AuditHasher *h, const uint8 *prev, const AuditRecord *r, uint8 *out);
/* The encoding itself, for the documentation and the external checker's tests. */
extern bytea *audit_record_encoding(const uint8 *prev, const AuditRecord *r);

/*
 * The leaves of a chain's tree: the record hashes from leaf first on, and
 * before first (a retention cut) the compact range of the first leaves.
 */
typedef struct MerkleLeaves
{
	int64		first;			/* the leaf hashes[0] is (0-based) */
	const uint8 *hashes;		/* record hashes, AUDIT_HASH_LEN each */
	const uint8 *pieces;		/* popcount(first) subtree roots, largest first */
} MerkleLeaves;

/* RFC 6962: a leaf's hash, a node's hash, and the root of the first n leaves. */
extern void audit_merkle_leaf(AuditHasher *h, const uint8 *record_hash, uint8 *out);
extern void audit_merkle_node(AuditHasher *h, const uint8 *left, const uint8 *right, uint8 *out);
extern void audit_merkle_root(AuditHasher *h, const MerkleLeaves *L, int64 n, uint8 *out);
/* The inclusion proof of leaf m (>= L->first) in a tree of n leaves: *npath hashes into path (at most 64). */
extern void audit_merkle_path(AuditHasher *h, const MerkleLeaves *L, int64 n, int64 m, uint8 *path, int *npath);

/* ---- appending (audit_api.c) ---- */

/*
 * Append a record of a change to the tenant's chain (pending until sealed):
 * payload is the change ({"old": ..., "new": ...}).  Runs as fincore's owner.
 */
extern void audit_append(const pg_uuid_t *tenant, const char *table_name, char op, const char *key, Jsonb *payload);
/* n records of one table and operation at once (a ledger batch's transfers), in their order. */
extern void audit_append_many(const pg_uuid_t *tenant, const char *table_name, char op, const char *const *keys,
							  Jsonb **payloads, int n);

/* Is the table audited (its fincore_audit_truncate trigger)? */
extern bool audit_relation_audited(Relation rel);

#endif							/* FINCORE_AUDIT_H */
