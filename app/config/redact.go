package config

import (
	"net/url"
	"regexp"
	"strings"
)

const redacted = "REDACTED"

var kvPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// redact hides secrets in a configuration value: the admin token, and the
// password of every connection string.
func redact(key string, v any) any {
	switch {
	case key == "admin.token":
		if s, _ := v.(string); s != "" {
			return redacted
		}
		return v
	case strings.HasSuffix(key, "url"):
		if s, ok := v.(string); ok {
			return RedactDSN(s)
		}
	case key == "isolation.database.servers":
		list, _ := v.([]any)
		out := make([]any, len(list))
		for i, item := range list {
			m, ok := item.(map[string]any)
			if !ok {
				out[i] = item
				continue
			}
			c := make(map[string]any, len(m))
			for k, val := range m {
				c[k] = redact(k, val)
			}
			out[i] = c
		}
		return out
	}
	return v
}

// RedactDSN hides the password of a PostgreSQL connection string, in URL or
// keyword/value form.
func RedactDSN(dsn string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return redacted
		}
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), redacted)
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", redacted)
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	return kvPassword.ReplaceAllString(dsn, "${1}"+redacted)
}
