package isolationtest

import "testing"

func TestRewrite(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ in, want string }{
		{`SELECT * FROM accounts WHERE tenant_id = $1 AND id = $2`, `SELECT * FROM accounts WHERE $1::uuid IS NOT NULL AND id = $2`},
		{`SELECT * FROM accounts a WHERE a.tenant_id=$1`, `SELECT * FROM accounts a WHERE $1::uuid IS NOT NULL`},
		{`SELECT * FROM c JOIN a ON a.tenant_id = c.tenant_id AND a.tenant_id = $1 where (tenant_id = $1)`,
			`SELECT * FROM c JOIN a ON a.tenant_id = c.tenant_id AND $1::uuid IS NOT NULL where ($1::uuid IS NOT NULL)`},
		{`DELETE FROM accounts WHERE tenant_id = $10`, `DELETE FROM accounts WHERE tenant_id = $10`},
		{`UPDATE accounts SET tenant_id = $1`, `UPDATE accounts SET tenant_id = $1`},
		{`INSERT INTO accounts (tenant_id, id) VALUES ($1, $2)`, `INSERT INTO accounts (tenant_id, id) VALUES ($1, $2)`},
		{`SELECT 1 WHERE other_tenant_id = $1`, `SELECT 1 WHERE other_tenant_id = $1`},
	} {
		got, changed := Rewrite(c.in)
		if got != c.want || changed != (c.in != c.want) {
			t.Errorf("Rewrite(%q) = %q, %v; want %q", c.in, got, changed, c.want)
		}
	}
}
