package database

import "testing"

func TestPreloads(t *testing.T) {
	for setting, want := range map[string]bool{
		"":                               false,
		"plpgsql":                        true,
		"pg_stat_statements, plpgsql":    true,
		`"plpgsql",auto_explain`:         true,
		"$libdir/plpgsql":                true,
		"/usr/lib/postgresql/plpgsql.so": true,
		"pg_stat_statements":             false,
		"plpgsql_check":                  false,
		"citus,pg_stat_statements":       false,
	} {
		if got := preloads(setting, "plpgsql"); got != want {
			t.Errorf("preloads(%q, plpgsql) = %v, want %v", setting, got, want)
		}
	}
}
