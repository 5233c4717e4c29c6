/*
 * tenancy.h — the current tenant and user, memberships (tenancy.c).
 */
#ifndef FINCORE_TENANCY_H
#define FINCORE_TENANCY_H

#include "fincore.h"

/* ---- tenancy (tenancy.c) ---- */

extern void tenancy_init(void);
/* The current tenant / user; false when there is none. */
extern bool tenancy_current_tenant(pg_uuid_t *out);
extern bool tenancy_current_user(pg_uuid_t *out);
/* The current tenant, or raise ERRCODE_FC_TENANT_REQUIRED. */
extern void tenancy_require_tenant(pg_uuid_t *out);
/* Is the current user a member of tenant (with role, when role is not NULL)? */
extern bool tenancy_has_role(const pg_uuid_t *tenant, const char *role);

#endif							/* FINCORE_TENANCY_H */
