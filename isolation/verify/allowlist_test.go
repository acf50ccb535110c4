package verify_test

import (
	"testing"

	"github.com/bulkheadhq/bulkhead/internal/pgtest"
	"github.com/bulkheadhq/bulkhead/isolation"
	"github.com/bulkheadhq/bulkhead/isolation/verify"
)

// exact is the tenant policy's predicate as the migrations write it.
const exact = `tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid`

// leakTable is a table without tenant_id, which no strategy creates: where
// a flaw copies rows to.
const leakTable = `CREATE TABLE leak (id uuid, name text)`

// allowList holds, for every code of the allow-list, a flaw that triggers
// it and a harmless look-alike that must not trigger anything. In the
// statements, run as the superuser on a fresh database, $APP is the
// serving role (one of the test's own when named: see plant), $ROLE a
// login role of the test, $TENANT a role of the test named like a tenant
// role of the schema strategy, and $DB the database.
var allowList = []struct {
	name, code, object, severity string
	flaw, alike                  []string
}{
	// Policies, compared as parsed expressions.
	{"a permissive predicate with more OR'ed in", verify.CodeTablePolicyMismatch, `"public"."accounts"`, isolation.Critical,
		[]string{`DROP POLICY tenant_isolation ON accounts`,
			`CREATE POLICY tenant_isolation ON accounts USING (` + exact + ` OR current_user = 'bulkhead_app') WITH CHECK (` + exact + `)`},
		// The same predicate, the setting's name in capitals and the
		// comparison the other way round.
		[]string{`DROP POLICY tenant_isolation ON accounts`,
			`CREATE POLICY tenant_isolation ON accounts
			 USING (NULLIF(current_setting('APP.TENANT_ID', true), '')::uuid = tenant_id)
			 WITH CHECK (tenant_id   =   NULLIF(current_setting('App.Tenant_Id', 't'), '')::uuid)`}},
	{"a policy that only tests the setting is there", verify.CodeTablePolicyMismatch, `"public"."accounts"`, isolation.Critical,
		[]string{`CREATE POLICY present ON accounts USING (current_setting('app.tenant_id', true) IS NOT NULL)`},
		// A second policy that is the tenant policy itself.
		[]string{`CREATE POLICY tenant_again ON accounts FOR ALL TO PUBLIC USING (` + exact + `)`}},
	{"WITH CHECK loosened to true", verify.CodeTablePolicyMismatch, `"public"."cost_items"`, isolation.Critical,
		[]string{`ALTER POLICY tenant_isolation ON cost_items WITH CHECK (true)`},
		[]string{`ALTER POLICY tenant_isolation ON cost_items WITH CHECK ((NULLIF(current_setting('APP.tenant_ID', true), '')::uuid = tenant_id))`}},
	{"an extra FOR SELECT policy mentioning the setting", verify.CodeTablePolicyMismatch, `"public"."budgets"`, isolation.Critical,
		[]string{`CREATE POLICY reads ON budgets FOR SELECT USING (tenant_id::text = current_setting('APP.TENANT_ID', true) OR name = 'shared')`},
		// The same policy on a table without tenant_id the serving role
		// cannot reach.
		[]string{`CREATE TABLE notes (owner text, name text)`,
			`CREATE POLICY reads ON notes FOR SELECT USING (owner = current_setting('APP.TENANT_ID', true) OR name = 'shared')`}},
	{"a restrictive policy, evaluated on every tenant's rows", verify.CodeTablePolicyMismatch, `"public"."accounts"`, isolation.Critical,
		[]string{`CREATE POLICY narrow ON accounts AS RESTRICTIVE USING (length(name) > 0)`},
		[]string{`CREATE TABLE notes (name text)`, `ALTER TABLE notes ENABLE ROW LEVEL SECURITY`,
			`CREATE POLICY narrow ON notes AS RESTRICTIVE USING (length(name) > 0)`}},
	{"a tenant policy for some roles only", verify.CodeTablePolicyMismatch, `"public"."accounts"`, isolation.Critical,
		[]string{`ALTER POLICY tenant_isolation ON accounts TO bulkhead_owner`,
			`CREATE POLICY everyone_else ON accounts TO bulkhead_app USING (tenant_id IS NOT NULL AND current_setting('app.tenant_id', true) <> '')`},
		[]string{`ALTER POLICY tenant_isolation ON accounts TO PUBLIC`}},
	{"a predicate that deparses as the tenant's but casts through a user function", verify.CodeTablePolicyMismatch, `"public"."accounts"`, isolation.Critical,
		[]string{`CREATE FUNCTION public.to_tenant(text) RETURNS uuid LANGUAGE sql IMMUTABLE AS $$ SELECT NULLIF($1, '')::uuid $$`,
			`CREATE CAST (text AS uuid) WITH FUNCTION public.to_tenant(text)`,
			`DROP POLICY tenant_isolation ON accounts`,
			`CREATE POLICY tenant_isolation ON accounts USING (` + exact + `) WITH CHECK (` + exact + `)`},
		// The same cast, made after the policy: the policy still uses
		// PostgreSQL's own conversion.
		[]string{`CREATE FUNCTION public.to_tenant(text) RETURNS uuid LANGUAGE sql IMMUTABLE AS $$ SELECT NULLIF($1, '')::uuid $$`,
			`CREATE CAST (text AS uuid) WITH FUNCTION public.to_tenant(text)`}},
	{"a permissive policy ignoring the setting", verify.CodeTableLoosePolicy, `"public"."accounts"`, isolation.Critical,
		[]string{`CREATE POLICY staff ON accounts USING (current_user = 'bulkhead_app')`},
		[]string{`CREATE TABLE notes (name text)`, `CREATE POLICY staff ON notes USING (current_user = 'bulkhead_app')`}},
	{"no tenant policy left", verify.CodeTableNoTenantPolicy, `"public"."accounts"`, isolation.Critical,
		[]string{`ALTER POLICY tenant_isolation ON accounts USING (tenant_id IS NOT NULL)`},
		[]string{`ALTER POLICY tenant_isolation ON accounts RENAME TO tenant_only`}},

	// Triggers, rules, publications: ways to copy rows out.
	{"a trigger copying every write", verify.CodeTableTrigger, `"public"."accounts"`, isolation.Critical,
		[]string{leakTable,
			`CREATE FUNCTION copy_out() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
			 BEGIN INSERT INTO public.leak VALUES (NEW.id, NEW.name); RETURN NEW; END $$`,
			`CREATE TRIGGER copy_out AFTER INSERT OR UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION copy_out()`},
		// The same trigger on a table without tenant_id; the foreign keys'
		// internal triggers are always there.
		[]string{leakTable, `CREATE TABLE notes (id uuid, name text)`,
			`CREATE FUNCTION copy_out() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
			 BEGIN INSERT INTO public.leak VALUES (NEW.id, NEW.name); RETURN NEW; END $$`,
			`REVOKE EXECUTE ON FUNCTION copy_out() FROM PUBLIC`,
			`CREATE TRIGGER copy_out AFTER INSERT OR UPDATE ON notes FOR EACH ROW EXECUTE FUNCTION copy_out()`}},
	{"a DO ALSO rule", verify.CodeTableRule, `"public"."accounts"`, isolation.Critical,
		[]string{leakTable, `CREATE RULE copy_out AS ON INSERT TO accounts DO ALSO INSERT INTO leak VALUES (NEW.id, NEW.name)`},
		[]string{leakTable, `CREATE TABLE notes (id uuid, name text)`,
			`CREATE RULE copy_out AS ON INSERT TO notes DO ALSO INSERT INTO leak VALUES (NEW.id, NEW.name)`}},
	{"a publication of every table", verify.CodeTablePublication, `"public"."cost_items"`, isolation.Critical,
		[]string{`CREATE PUBLICATION everything FOR ALL TABLES`},
		[]string{`CREATE TABLE notes (id uuid PRIMARY KEY, name text)`, `CREATE PUBLICATION lookups FOR TABLE notes`}},
	{"a publication of one tenant table", verify.CodeTablePublication, `"public"."accounts"`, isolation.Critical,
		[]string{`CREATE PUBLICATION accounts_out FOR TABLE accounts`},
		[]string{`CREATE PUBLICATION nothing_yet`}},

	// What a tenant table's expressions and column types call.
	{"a column default calling a definer function", verify.CodeTableUserFunction, `"public"."accounts"`, isolation.Critical,
		[]string{`CREATE FUNCTION public.stamp() RETURNS text LANGUAGE sql SECURITY DEFINER AS $$ SELECT 'x' $$`,
			`ALTER FUNCTION public.stamp() OWNER TO bulkhead_owner`,
			`ALTER TABLE accounts ALTER COLUMN name SET DEFAULT public.stamp()`},
		[]string{`ALTER TABLE accounts ALTER COLUMN name SET DEFAULT (now())::text`,
			`ALTER TABLE accounts ALTER COLUMN id SET DEFAULT gen_random_uuid()`}},
	{"a check constraint calling a user function", verify.CodeTableUserFunction, `"public"."budgets"`, isolation.Critical,
		[]string{`CREATE FUNCTION public.keep(text) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$`,
			`ALTER TABLE budgets ADD CONSTRAINT kept CHECK (public.keep(name)) NOT VALID`},
		[]string{`ALTER TABLE budgets ADD CONSTRAINT short CHECK (length(name) < 500) NOT VALID`}},
	{"a column whose domain calls a user function", verify.CodeTableUserFunction, `"public"."accounts"`, isolation.Critical,
		[]string{`CREATE FUNCTION public.keep(text) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$`,
			`CREATE DOMAIN public.kept_text AS text CHECK (public.keep(VALUE))`,
			`ALTER TABLE accounts ALTER COLUMN name TYPE public.kept_text`},
		[]string{`CREATE DOMAIN public.short_text AS text CHECK (length(VALUE) < 500)`,
			`ALTER TABLE accounts ALTER COLUMN name TYPE public.short_text`}},
	{"an index on a user function", verify.CodeTableUserFunction, `"public"."accounts"`, isolation.Critical,
		[]string{`CREATE FUNCTION public.fold(text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT lower($1) $$`,
			`CREATE INDEX accounts_fold_idx ON accounts (tenant_id, public.fold(name))`},
		[]string{`CREATE INDEX accounts_lower_idx ON accounts (tenant_id, lower(name))`}},

	// Keys: constraints ignore RLS.
	{"a unique index without tenant_id", verify.CodeTableKeyWithoutTenant, `"public"."accounts"`, isolation.Critical,
		[]string{`CREATE UNIQUE INDEX accounts_name_key ON accounts (name) INCLUDE (tenant_id)`},
		// tenant_id anywhere among the key columns binds the key to a tenant.
		[]string{`CREATE UNIQUE INDEX accounts_name_key ON accounts (tenant_id, name)`,
			`CREATE UNIQUE INDEX accounts_name_tenant_key ON accounts (name, tenant_id)`}},
	{"an exclusion constraint without tenant_id", verify.CodeTableKeyWithoutTenant, `"public"."accounts"`, isolation.Critical,
		[]string{`ALTER TABLE accounts ADD CONSTRAINT accounts_name_excl EXCLUDE USING btree (name WITH =)`},
		[]string{`ALTER TABLE accounts ADD CONSTRAINT accounts_name_excl EXCLUDE USING btree (name WITH =, tenant_id WITH =)`}},
	{"a foreign key that does not match tenant_id with tenant_id", verify.CodeTableKeyWithoutTenant, `"public"."budgets"`, isolation.Critical,
		[]string{`ALTER TABLE budgets ADD CONSTRAINT budgets_crossed_fkey FOREIGN KEY (account_id, tenant_id) REFERENCES accounts (tenant_id, id) NOT VALID`},
		[]string{`ALTER TABLE budgets ADD CONSTRAINT budgets_again_fkey FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id) NOT VALID`}},

	// Grants.
	{"PUBLIC may read a tenant table", verify.CodeTableGrant, `"public"."accounts"`, isolation.Critical,
		[]string{`GRANT SELECT ON accounts TO PUBLIC`},
		[]string{`GRANT SELECT ON accounts TO bulkhead_system`}},
	{"another role may read a tenant table", verify.CodeTableGrant, `"public"."accounts"`, isolation.Critical,
		[]string{`GRANT SELECT (name) ON accounts TO $ROLE`},
		[]string{`GRANT SELECT (name) ON accounts TO bulkhead_app`}},
	{"the serving role may pass its rights on", verify.CodeTableGrant, `"public"."accounts"`, isolation.Critical,
		[]string{`GRANT SELECT ON accounts TO bulkhead_app WITH GRANT OPTION`},
		[]string{`REVOKE DELETE ON accounts FROM bulkhead_app`}},
	{"default privileges reaching the serving role", verify.CodeDefaultGrant, "default privileges of bulkhead_owner", isolation.Warning,
		[]string{`ALTER DEFAULT PRIVILEGES FOR ROLE bulkhead_owner GRANT SELECT ON TABLES TO bulkhead_app`},
		[]string{`ALTER DEFAULT PRIVILEGES FOR ROLE bulkhead_owner GRANT SELECT ON TABLES TO $ROLE`}},

	// What the serving role may reach besides tenant tables.
	{"a readable table without tenant_id", verify.CodeRelationReachable, `"public"."leak"`, isolation.Critical,
		[]string{leakTable, `GRANT SELECT ON leak TO bulkhead_app`},
		[]string{leakTable, `GRANT SELECT ON leak TO $ROLE`}},
	{"a table without tenant_id PUBLIC may write", verify.CodeRelationReachable, `"public"."leak"`, isolation.Critical,
		[]string{leakTable, `GRANT INSERT ON leak TO PUBLIC`},
		[]string{`CREATE SCHEMA hidden`, `CREATE TABLE hidden.leak (id uuid)`, `GRANT INSERT ON hidden.leak TO PUBLIC`}},
	{"a view over a table without tenant_id", verify.CodeRelationReachable, `"public"."leak_view"`, isolation.Critical,
		[]string{leakTable, `CREATE VIEW leak_view AS SELECT * FROM leak`, `GRANT SELECT ON leak_view TO bulkhead_app`},
		[]string{leakTable, `CREATE VIEW leak_view WITH (security_invoker = true) AS SELECT * FROM leak`, `GRANT SELECT ON leak_view TO bulkhead_app`}},
	{"a sequence", verify.CodeRelationReachable, `"public"."counter"`, isolation.Critical,
		[]string{`CREATE SEQUENCE counter`, `GRANT USAGE ON SEQUENCE counter TO bulkhead_app`},
		[]string{`CREATE SEQUENCE counter`}},
	{"the version table writable", verify.CodeRelationReachable, `"public"."goose_tenant"`, isolation.Critical,
		[]string{`GRANT INSERT ON goose_tenant TO bulkhead_app`},
		[]string{`GRANT SELECT ON goose_tenant TO bulkhead_app`}},
	{"a readable table in the control plane that no migration makes", verify.CodeRelationReachable, `"bulkhead"."leak"`, isolation.Critical,
		[]string{`CREATE TABLE bulkhead.leak (id uuid, name text)`, `GRANT SELECT ON bulkhead.leak TO bulkhead_app`},
		[]string{`CREATE TABLE bulkhead.leak (id uuid, name text)`, `GRANT SELECT ON bulkhead.audit_log TO bulkhead_app`}},
	{"a tenant table hidden in information_schema", verify.CodeTableRLSDisabled, `"information_schema"."accounts_copy"`, isolation.Critical,
		[]string{`CREATE TABLE information_schema.accounts_copy (tenant_id uuid, name text)`,
			`GRANT SELECT ON information_schema.accounts_copy TO bulkhead_app`},
		[]string{`CREATE TABLE information_schema.accounts_copy (tenant_id uuid, name text)`}},
	{"CREATE on a schema", verify.CodeSchemaCreate, `schema "public"`, isolation.Critical,
		[]string{`GRANT CREATE ON SCHEMA public TO bulkhead_app`},
		[]string{`GRANT CREATE ON SCHEMA public TO $ROLE`}},
	{"TEMPORARY on the database", verify.CodeDatabaseTemp, "database ", isolation.Critical,
		[]string{`GRANT TEMPORARY ON DATABASE $DB TO PUBLIC`},
		[]string{`GRANT TEMPORARY ON DATABASE $DB TO $ROLE`}},
	{"CREATE on the database", verify.CodeDatabaseCreate, "database ", isolation.Warning,
		[]string{`GRANT CREATE ON DATABASE $DB TO bulkhead_app`},
		[]string{`GRANT CREATE ON DATABASE $DB TO $ROLE`}},
	{"a foreign server", verify.CodeForeignServer, `foreign server "elsewhere"`, isolation.Critical,
		[]string{`CREATE FOREIGN DATA WRAPPER nowhere`, `CREATE SERVER elsewhere FOREIGN DATA WRAPPER nowhere`,
			`GRANT USAGE ON FOREIGN SERVER elsewhere TO bulkhead_app`},
		[]string{`CREATE FOREIGN DATA WRAPPER nowhere`, `CREATE SERVER elsewhere FOREIGN DATA WRAPPER nowhere`,
			`GRANT USAGE ON FOREIGN SERVER elsewhere TO $ROLE`}},
	{"a system function initdb keeps from PUBLIC", verify.CodeSystemObjectGrant, "pg_read_binary_file(text)", isolation.Critical,
		[]string{`GRANT EXECUTE ON FUNCTION pg_read_binary_file(text) TO bulkhead_app`},
		[]string{`GRANT EXECUTE ON FUNCTION lower(text) TO bulkhead_app`, `GRANT EXECUTE ON FUNCTION pg_read_binary_file(text) TO $ROLE`}},
	{"a system catalog initdb keeps from PUBLIC", verify.CodeSystemObjectGrant, "pg_statistic", isolation.Critical,
		[]string{`GRANT SELECT ON pg_statistic TO PUBLIC`},
		[]string{`GRANT SELECT ON pg_class TO bulkhead_app`}},
	{"the tenant setting set for the database", verify.CodeSettingTenantDefault, "app.tenant_id", isolation.Critical,
		[]string{`ALTER DATABASE $DB SET app.tenant_id = '0190a1b2-0000-7000-8000-000000000001'`},
		[]string{`ALTER DATABASE $DB SET app.other = '0190a1b2-0000-7000-8000-000000000001'`}},
	{"the tenant setting set for the role, in capitals", verify.CodeSettingTenantDefault, "app.tenant_id", isolation.Critical,
		[]string{`ALTER ROLE $APP IN DATABASE $DB SET "APP.TENANT_ID" = '0190a1b2-0000-7000-8000-000000000001'`},
		[]string{`ALTER ROLE $APP IN DATABASE $DB SET statement_timeout = '5s'`}},

	// What the tenant predicate runs, and what runs on the migrator's DDL.
	{"current_setting replaced", verify.CodeFunctionBuiltinAltered, "current_setting(text,boolean)", isolation.Critical,
		[]string{`CREATE OR REPLACE FUNCTION pg_catalog.current_setting(text, boolean) RETURNS text LANGUAGE sql STABLE
			AS $$ SELECT '0190a1b2-0000-7000-8000-000000000001' $$`},
		[]string{`ALTER FUNCTION pg_catalog.current_setting(text, boolean) COST 2`}},
	{"current_setting made IMMUTABLE", verify.CodeFunctionBuiltinAltered, "current_setting(text,boolean)", isolation.Critical,
		[]string{`ALTER FUNCTION pg_catalog.current_setting(text, boolean) IMMUTABLE`},
		[]string{`ALTER FUNCTION pg_catalog.current_setting(text, boolean) STABLE`}},
	{"an event trigger", verify.CodeEventTrigger, `event trigger "watch"`, isolation.Critical,
		[]string{`CREATE FUNCTION watch() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$`,
			`CREATE EVENT TRIGGER watch ON ddl_command_end EXECUTE FUNCTION watch()`},
		[]string{`CREATE FUNCTION watch() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$`,
			`CREATE EVENT TRIGGER watch ON ddl_command_end EXECUTE FUNCTION watch()`, `ALTER EVENT TRIGGER watch DISABLE`}},

	// Functions the serving role may execute.
	{"a definer function of a superuser hidden in pg_catalog", verify.CodeFunctionDefinerBypasses, "open_up()", isolation.Critical,
		[]string{`CREATE FUNCTION pg_catalog.open_up() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS $$ SELECT count(*) FROM public.accounts $$`},
		[]string{`CREATE FUNCTION pg_catalog.open_up() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS $$ SELECT count(*) FROM public.accounts $$`,
			`REVOKE EXECUTE ON FUNCTION pg_catalog.open_up() FROM PUBLIC`}},
	{"a definer function of the owner that runs what it is given", verify.CodeFunctionDefinerOwner, "run_sql(text)", isolation.Critical,
		[]string{`CREATE FUNCTION run_sql(q text) RETURNS void LANGUAGE plpgsql SECURITY DEFINER AS $$ BEGIN EXECUTE q; END $$`,
			`ALTER FUNCTION run_sql(text) OWNER TO bulkhead_owner`},
		[]string{`CREATE FUNCTION run_sql(q text) RETURNS void LANGUAGE plpgsql SECURITY INVOKER AS $$ BEGIN EXECUTE q; END $$`,
			`ALTER FUNCTION run_sql(text) OWNER TO bulkhead_owner`}},
	{"Bulkhead's own definer function with its body replaced", verify.CodeFunctionDefinerOwner, "record_tenant_usage(", isolation.Critical,
		[]string{`CREATE OR REPLACE FUNCTION bulkhead.record_tenant_usage(p_minute timestamptz, p_replica text, p_retention interval,
			p_tenants uuid[], p_requests bigint[], p_rejections bigint[], p_waits bigint[], p_wait_us bigint[], p_db_us bigint[])
			RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
			AS $$ DELETE FROM bulkhead.tenant_usage $$`},
		[]string{`COMMENT ON FUNCTION bulkhead.record_tenant_usage(timestamptz, text, interval, uuid[], bigint[], bigint[], bigint[], bigint[], bigint[]) IS 'adds usage'`}},
	{"Bulkhead's own definer function with its search_path unpinned", verify.CodeFunctionDefinerOwner, "record_tenant_usage(", isolation.Critical,
		[]string{`ALTER FUNCTION bulkhead.record_tenant_usage(timestamptz, text, interval, uuid[], bigint[], bigint[], bigint[], bigint[], bigint[]) RESET search_path`},
		[]string{`ALTER FUNCTION bulkhead.record_tenant_usage(timestamptz, text, interval, uuid[], bigint[], bigint[], bigint[], bigint[], bigint[]) COST 200`}},
	{"a definer function of a role holding tenant rows", verify.CodeFunctionDefiner, "peek()", isolation.Critical,
		[]string{`GRANT SELECT ON accounts TO $ROLE`, `ALTER ROLE $ROLE NOLOGIN`,
			`CREATE FUNCTION peek() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS $$ SELECT count(*) FROM public.accounts $$`,
			`ALTER FUNCTION peek() OWNER TO $ROLE`},
		[]string{`CREATE FUNCTION peek() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS $$ SELECT count(*) FROM public.accounts $$`,
			`ALTER FUNCTION peek() OWNER TO bulkhead_app`}},
	{"a definer function of any other role", verify.CodeFunctionDefiner, "whoami()", isolation.Warning,
		[]string{`CREATE FUNCTION whoami() RETURNS name LANGUAGE sql SECURITY DEFINER AS $$ SELECT current_user $$`,
			`ALTER FUNCTION whoami() OWNER TO $ROLE`},
		[]string{`CREATE SCHEMA private`,
			`CREATE FUNCTION private.whoami() RETURNS name LANGUAGE sql SECURITY DEFINER AS $$ SELECT current_user $$`,
			`ALTER FUNCTION private.whoami() OWNER TO $ROLE`}},

	// The serving role itself, made on one of the test's own.
	{"CREATEROLE", verify.CodeRoleAttribute, "role serving_", isolation.Critical,
		[]string{`ALTER ROLE $APP CREATEROLE`},
		[]string{`ALTER ROLE $APP CONNECTION LIMIT 50`}},
	{"REPLICATION", verify.CodeRoleAttribute, "role serving_", isolation.Critical,
		[]string{`ALTER ROLE $APP REPLICATION`},
		[]string{`ALTER ROLE $APP VALID UNTIL 'infinity'`}},
	{"CREATEDB", verify.CodeRoleAttribute, "role serving_", isolation.Warning,
		[]string{`ALTER ROLE $APP CREATEDB`},
		[]string{`ALTER ROLE $APP NOCREATEDB NOINHERIT`}},
	{"a predefined role that reads files", verify.CodeRoleMemberExtra, "role pg_read_server_files", isolation.Critical,
		[]string{`GRANT pg_read_server_files TO $APP`},
		[]string{`GRANT pg_read_server_files TO $ROLE`}},
	{"a predefined role that reads everything, through a role named like a tenant's", verify.CodeRoleMemberExtra, "role pg_read_all_data", isolation.Critical,
		[]string{`GRANT pg_read_all_data TO $TENANT`, `GRANT $TENANT TO $APP`},
		// A tenant role as the schema strategy makes one: with its schema.
		[]string{`CREATE SCHEMA $TENANT AUTHORIZATION bulkhead_owner`, `GRANT USAGE ON SCHEMA $TENANT TO $TENANT`,
			`GRANT $TENANT TO $APP`}},
	{"a role named like a tenant's, holding nothing (its database dropped), but with an attribute", verify.CodeRoleMemberExtra, "role t_0000", isolation.Critical,
		[]string{`ALTER ROLE $TENANT CREATEDB`, `GRANT $TENANT TO $APP`},
		// LOGIN, as tenant roles are on Citus, is no right the serving
		// role gains by SET ROLE.
		[]string{`ALTER ROLE $TENANT LOGIN`, `GRANT $TENANT TO $APP`}},
	{"a login role that may act as the serving role", verify.CodeRoleServingMember, "role verify_", isolation.Critical,
		[]string{`GRANT $APP TO $ROLE`},
		[]string{`GRANT $APP TO bulkhead_owner`}},
}

// Each code of the allow-list names its flaw, made on a throwaway
// database, on its object and at its severity; and its harmless look-alike,
// made on another, leaves verify with nothing to say.
func TestVerifyAllowList(t *testing.T) {
	t.Parallel()
	for _, tc := range allowList {
		t.Run(tc.code+" "+tc.name, func(t *testing.T) {
			t.Parallel()
			t.Run("flaw", func(t *testing.T) {
				t.Parallel()
				fs := plant(t, pgtest.New(t), tc.flaw)
				f, ok := find(fs, tc.code, tc.object)
				if !ok {
					t.Fatalf("verify does not report %s on %s; it reports:%s", tc.code, tc.object, codes(fs))
				}
				if f.Severity != tc.severity || f.Fix == "" || f.Detail == "" {
					t.Errorf("finding %v: want severity %s, a detail and a fix", f, tc.severity)
				}
			})
			t.Run("look-alike", func(t *testing.T) {
				t.Parallel()
				if fs := plant(t, pgtest.New(t), tc.alike); len(fs) != 0 {
					t.Fatalf("verify reports a harmless look-alike:%s", codes(fs))
				}
			})
		})
	}
}
