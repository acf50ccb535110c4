package verify

// Finding codes. They are stable: scripts and tests match on them, and
// docs/VERIFY.md lists each with the flaw that triggers it. Strategies
// add codes of their own (isolation/schema, isolation/database).
const (
	// CodeRoleSuperuser: the serving role is a superuser.
	CodeRoleSuperuser = "role-superuser"
	// CodeRoleBypassRLS: the serving role has BYPASSRLS.
	CodeRoleBypassRLS = "role-bypassrls"
	// CodeRoleAttribute: the serving role has CREATEROLE or REPLICATION
	// (critical), or CREATEDB or INHERIT (a warning): attributes
	// Bulkhead never gives it.
	CodeRoleAttribute = "role-attribute"
	// CodeRoleMemberOfBypasser: the serving role is a member of (may SET
	// ROLE to) a superuser or BYPASSRLS role, such as bulkhead_system.
	CodeRoleMemberOfBypasser = "role-member-of-bypasser"
	// CodeRoleMemberExtra: the serving role is a member of a role
	// Bulkhead never grants it (anything but the schema strategy's tenant
	// roles): a predefined role such as pg_read_server_files, the owner
	// role, any other.
	CodeRoleMemberExtra = "role-member-extra"
	// CodeRoleServingMember: a role other than the owner role is a member
	// of the serving role, and so may act as it.
	CodeRoleServingMember = "role-serving-member"
	// CodeRoleOwnsTenantTable: the serving role owns a tenant table.
	CodeRoleOwnsTenantTable = "role-owns-tenant-table"
	// CodeRoleMemberOfOwner: the serving role is a member of a role owning
	// a tenant table.
	CodeRoleMemberOfOwner = "role-member-of-owner"

	// CodeTableRLSDisabled: a tenant table (or partition) without RLS.
	CodeTableRLSDisabled = "table-rls-disabled"
	// CodeTableRLSNotForced: a tenant table (or partition) whose RLS is not
	// forced, so its owner bypasses it.
	CodeTableRLSNotForced = "table-rls-not-forced"
	// CodeTableNoTenantPolicy: a tenant table (or partition) without the
	// tenant policy exactly as the migrations create it.
	CodeTableNoTenantPolicy = "table-no-tenant-policy"
	// CodeTableLoosePolicy: a permissive policy ignoring the tenant
	// setting, OR'ed with the tenant policy.
	CodeTableLoosePolicy = "table-loose-policy"
	// CodeTablePolicyMismatch: any other policy that is not exactly the
	// tenant policy: a predicate with more OR'ed in, one that only tests
	// the setting, a loosened WITH CHECK, an extra FOR SELECT policy, a
	// restrictive policy (its expression runs on every tenant's rows), a
	// policy calling a function that is not built in.
	CodeTablePolicyMismatch = "table-policy-mismatch"
	// CodeTableTrigger: a trigger on a tenant table (Bulkhead creates
	// none; a trigger can copy every write elsewhere).
	CodeTableTrigger = "table-trigger"
	// CodeTableRule: a rule on a tenant table (a DO ALSO rule copies rows
	// elsewhere, with the table owner's rights).
	CodeTableRule = "table-rule"
	// CodeTablePublication: a tenant table is in a publication: logical
	// replication copies every tenant's rows out.
	CodeTablePublication = "table-publication"
	// CodeTableUserFunction: an expression evaluated on a tenant table's
	// rows (a column default, a generated column, a check constraint, an
	// index, a column type's domain constraint or I/O) calls a function or
	// operator that is not built into PostgreSQL.
	CodeTableUserFunction = "table-user-function"
	// CodeTableKeyWithoutTenant: a unique index without tenant_id among
	// its key columns, an exclusion constraint not comparing tenant_id
	// with =, or a foreign key to a tenant table that does
	// not match tenant_id with tenant_id: constraints ignore RLS, so they
	// probe or link across tenants.
	CodeTableKeyWithoutTenant = "table-key-without-tenant"
	// CodeTableGrant: a privilege on a tenant table beyond what the
	// strategies grant (DML to the serving role, SELECT to the system
	// role): any privilege of another role or PUBLIC, a grant option.
	CodeTableGrant = "table-grant"
	// CodeTableDangerousGrant: TRUNCATE, REFERENCES or TRIGGER (which ALL
	// includes) on a tenant table, or REFERENCES on one of its columns, for
	// the serving role, PUBLIC or a role the serving role may act as. None
	// of them is subject to RLS.
	CodeTableDangerousGrant = "table-dangerous-grant"
	// CodeDefaultDangerousGrant: default privileges that will give the
	// serving role or PUBLIC TRUNCATE, REFERENCES or TRIGGER on tables
	// created later.
	CodeDefaultDangerousGrant = "default-dangerous-grant"
	// CodeDefaultGrant: any other default privilege that will give the
	// serving role, PUBLIC or a role it may act as rights on objects
	// created later.
	CodeDefaultGrant = "default-grant"

	// CodeViewNotSecurityInvoker: a view the serving role can read reaches
	// a tenant table and runs as its owner (no security_invoker).
	CodeViewNotSecurityInvoker = "view-not-security-invoker"
	// CodeMatviewOverTenantTable: a materialized view the serving role can
	// read holds tenant rows; materialized views have no RLS.
	CodeMatviewOverTenantTable = "matview-over-tenant-table"
	// CodeRelationReachable: the serving role may read or write a
	// relation that is neither a tenant table, nor the control plane, nor
	// a tenant migrations' version table (read only): where copied rows
	// land, or are read from.
	CodeRelationReachable = "relation-reachable"
	// CodeSchemaCreate: the serving role may create objects in a schema.
	CodeSchemaCreate = "schema-create"
	// CodeDatabaseTemp: the serving role may create temporary tables,
	// which can shadow tenant tables for the rest of a pooled session.
	CodeDatabaseTemp = "database-temp"
	// CodeDatabaseCreate: the serving role may create schemas in the
	// database.
	CodeDatabaseCreate = "database-create"
	// CodeForeignServer: the serving role may use a foreign server or
	// foreign-data wrapper, and so reach data as another user.
	CodeForeignServer = "foreign-server-usage"
	// CodeSystemObjectGrant: the serving role, PUBLIC or a role it may act
	// as holds a privilege on a PostgreSQL system function or relation
	// that initdb did not give (EXECUTE on pg_read_binary_file, SELECT on
	// pg_authid, ...).
	CodeSystemObjectGrant = "system-object-grant"
	// CodeSettingTenantDefault: the tenant setting has a value outside any
	// transaction (ALTER ROLE or DATABASE … SET, ALTER SYSTEM, or the
	// DSN's options): an unbound query sees that tenant.
	CodeSettingTenantDefault = "setting-tenant-default"

	// CodeFunctionImmutableSetting: a function reading the tenant setting
	// is IMMUTABLE, so a cached plan may serve one tenant's value to another.
	CodeFunctionImmutableSetting = "function-immutable-setting"
	// CodeFunctionDefinerBypasses: a SECURITY DEFINER function the serving
	// role may execute runs as a role that bypasses RLS.
	CodeFunctionDefinerBypasses = "function-definer-bypasses"
	// CodeFunctionDefinerOwner: a SECURITY DEFINER function the serving
	// role may execute runs as a role that owns tenant tables (or inherits
	// from one that does), and so may ALTER them: switch RLS off, drop the
	// policy.
	CodeFunctionDefinerOwner = "function-definer-owner"
	// CodeFunctionDefiner: any other SECURITY DEFINER function the serving
	// role may execute: critical when its owner holds privileges on a
	// tenant table, a warning otherwise.
	CodeFunctionDefiner = "function-definer"

	// CodeFunctionBuiltinAltered: a function or operator the tenant
	// predicate runs (current_setting, NULLIF's text =, uuid =, the
	// text-to-uuid conversion) is no longer PostgreSQL's own: replaced by
	// CREATE OR REPLACE, or its volatility changed.
	CodeFunctionBuiltinAltered = "function-builtin-altered"
	// CodeEventTrigger: an event trigger, which runs its function on the
	// DDL of whoever migrates, with that role's rights: it can undo what
	// verify checked, after it checked.
	CodeEventTrigger = "event-trigger"

	// CodeControlWriteGrant: the serving role may write to, or create in,
	// the control plane (schema bulkhead), which it must only read.
	CodeControlWriteGrant = "control-write-grant"
	// CodePostgresOutdated: a PostgreSQL minor release without the fixes
	// of the known RLS vulnerabilities.
	CodePostgresOutdated = "postgres-outdated"
	// CodePostgresUnsupported: PostgreSQL older than 15.
	CodePostgresUnsupported = "postgres-unsupported"

	// CodeCitusPropagation: on a Citus coordinator, the database lacks
	// citus.propagate_set_commands = 'local', so the tenant binding does
	// not reach the workers.
	CodeCitusPropagation = "citus-propagation"
	// CodeCitusTableLocal: on a Citus coordinator, a tenant table outside
	// a distributed schema that is not hash-distributed on tenant_id, or
	// one in a distributed schema outside the schema's shard group.
	CodeCitusTableLocal = "citus-table-local"
	// CodeCitusTableNotColocated: on a Citus coordinator, a tenant table
	// distributed on tenant_id but not co-located with the others.
	CodeCitusTableNotColocated = "citus-table-not-colocated"
)
