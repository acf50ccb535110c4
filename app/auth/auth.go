// Package auth holds API keys, the verification of identity providers' bearer
// tokens (JWTs, see Verifier), and the principal a request acts as.
//
// A key reads "bh_" + a 16-character public id + "_" + a 52-character
// secret, both lower-case base32. The id is stored in the clear and looks the
// key up; the secret is 256 random bits stored only as its SHA-256 (which is
// enough for a secret of that entropy) and compared in constant time.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"errors"
	"strings"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// Role is what a key may do.
type Role string

// Roles.
const (
	Viewer Role = "viewer"
	Editor Role = "editor"
)

// ParseRole parses a role name; empty means Viewer.
func ParseRole(s string) (Role, error) {
	switch Role(s) {
	case "", Viewer:
		return Viewer, nil
	case Editor:
		return Editor, nil
	}
	return "", errors.New(`role must be "viewer" or "editor"`)
}

var (
	// ErrUnauthenticated means no valid key was presented.
	ErrUnauthenticated = errors.New("missing, unknown, revoked or expired API key")
	// ErrSuspended means the key's tenant is suspended.
	ErrSuspended = errors.New("tenant is suspended")
)

const (
	prefix    = "bh_"
	idLen     = 16 // 10 random bytes
	secretLen = 52 // 32 random bytes
)

var enc = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Key is a newly made key. Token is the secret a client presents; it is
// shown once and never stored.
type Key struct {
	ID    string
	Token string
	Hash  []byte
}

// NewKey makes a random key.
func NewKey() Key {
	id := make([]byte, 10)
	secret := make([]byte, 32)
	rand.Read(id) // never returns an error
	rand.Read(secret)
	k := Key{ID: enc.EncodeToString(id)}
	s := enc.EncodeToString(secret)
	k.Token = prefix + k.ID + "_" + s
	k.Hash = hash(s)
	return k
}

// Parse splits a presented token into its public id and secret, or returns
// ErrUnauthenticated when it does not have the shape of a key.
func Parse(token string) (id, secret string, err error) {
	rest, ok := strings.CutPrefix(token, prefix)
	if !ok || len(rest) != idLen+1+secretLen || rest[idLen] != '_' {
		return "", "", ErrUnauthenticated
	}
	id, secret = rest[:idLen], rest[idLen+1:]
	if _, err := enc.DecodeString(id); err != nil {
		return "", "", ErrUnauthenticated
	}
	return id, secret, nil
}

// ValidID reports whether id has the shape of a key's public id.
func ValidID(id string) bool {
	_, err := enc.DecodeString(id)
	return err == nil && len(id) == idLen
}

// Match reports, in constant time, whether secret hashes to stored.
func Match(secret string, stored []byte) bool {
	return subtle.ConstantTimeCompare(hash(secret), stored) == 1
}

func hash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// Principal is who a request acts as: a key or an identity provider's
// token, its role, and the one tenant it speaks for.
type Principal struct {
	// KeyID is the API key's public id; empty for a token.
	KeyID  string
	Role   Role
	Tenant isolation.Tenant
	// Issuer and Subject name a token's iss and sub; empty for a key.
	Issuer  string
	Subject string
	// Limits are the tenant's overrides of the configured limits, read
	// with the key.
	Limits Limits
}

// Limits are a tenant's overrides of the configured limits; a zero field
// keeps the configured default.
type Limits struct {
	// MaxConcurrent is how many transactions the tenant may run at once.
	MaxConcurrent int
	// Rate and Burst shape the token bucket of each of its keys.
	Rate  float64
	Burst int
}

// CanWrite reports whether p may change data.
func (p Principal) CanWrite() bool { return p.Role == Editor }

type ctxKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the principal ctx carries; ok is false when there is
// none, and callers must then refuse: there is no default tenant.
func FromContext(ctx context.Context) (p Principal, ok bool) {
	p, ok = ctx.Value(ctxKey{}).(Principal)
	return p, ok
}

// LimitKey names the principal's own rate-limit bucket: its API key, or,
// for a token, its issuer and subject (with the tenant, so that one
// subject's tokens for two tenants do not share a bucket). Never empty, so
// no two callers without a key share one.
func (p Principal) LimitKey() string {
	if p.KeyID != "" {
		return "key:" + p.KeyID
	}
	return "token:" + p.Issuer + "\x00" + p.Subject + "\x00" + p.Tenant.ID.String()
}
