package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"

	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"

	"github.com/bulkheadhq/bulkhead/app/config"
)

var (
	// ErrNoRole means a valid token gave no role: no role claim, no mapped
	// group, and the issuer has no default role.
	ErrNoRole = errors.New("the token grants no role")
	// ErrUnknownTenant means a valid token named a tenant that does not
	// exist (or is being deleted).
	ErrUnknownTenant = errors.New("the token's tenant does not exist")
)

// TokenError is a refused bearer token. Reason is one of a fixed set of
// phrases written here, fit to show the client: never a library's error
// text, never a claim's value. It is an ErrUnauthenticated.
type TokenError struct{ Reason string }

func (e *TokenError) Error() string { return "bearer token refused: " + e.Reason }

// Is makes a TokenError an ErrUnauthenticated.
func (e *TokenError) Is(target error) bool { return target == ErrUnauthenticated }

func refused(reason string) error { return &TokenError{Reason: reason} }

// Identity is what a verified token says: who issued it for whom, the slug
// of the tenant it names, and the role it grants there.
type Identity struct {
	Issuer  string
	Subject string
	Slug    string
	Role    Role
}

// IsJWT reports whether a presented bearer token has the shape of a JWT —
// three dot-separated parts — rather than of an API key, which starts with
// the key prefix and has no dots. It looks at nothing else: cheap enough
// to run before either check.
func IsJWT(token string) bool {
	return !strings.HasPrefix(token, prefix) && strings.Count(token, ".") == 2
}

const (
	// maxTokenLen bounds a token before any parsing; real ones are a few KiB.
	maxTokenLen = 16 << 10
	// maxDocBytes bounds a discovery document or key set read from an
	// issuer.
	maxDocBytes = 1 << 20
)

// Verifier verifies JWTs from the issuers of oidc.issuers against their
// published keys. Each issuer's JWKS is fetched once, refreshed every
// oidc.jwks_refresh_interval in the background, and fetched again for a
// token whose key id is not cached at most once per
// oidc.jwks_refetch_interval; every fetch is bounded by oidc.jwks_timeout.
// When no cached key matches and the JWKS cannot be had, tokens are refused.
// A Verifier is safe for concurrent use; Close stops its refreshes.
type Verifier struct {
	issuers map[string]*issuer
	log     *slog.Logger
	client  *http.Client
	cfg     config.OIDC

	ctx    context.Context // ends the background refreshes
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

type issuer struct {
	cfg         config.Issuer
	everyTenant bool
	parser      *jwt.Parser

	mu    sync.Mutex // guards keys while it is set up
	keys  keyfunc.Keyfunc
	setup *rate.Limiter // bounds attempts to discover and first fetch
}

// NewVerifier returns a verifier for the issuers of cfg; with none it
// refuses every token. It fetches nothing until Warm or the first token.
func NewVerifier(cfg config.OIDC, log *slog.Logger) *Verifier {
	ctx, cancel := context.WithCancel(context.Background())
	v := &Verifier{
		issuers: make(map[string]*issuer, len(cfg.Issuers)),
		log:     log,
		cfg:     cfg,
		client: &http.Client{
			Timeout:   cfg.JWKSTimeout,
			Transport: limitedBody{http.DefaultTransport},
		},
		ctx:    ctx,
		cancel: cancel,
	}
	for _, ic := range cfg.Issuers {
		v.issuers[ic.Issuer] = &issuer{
			cfg:         ic,
			everyTenant: slices.Contains(ic.Tenants, config.AnyTenant),
			parser: jwt.NewParser(
				jwt.WithValidMethods(ic.Algorithms),
				jwt.WithIssuer(ic.Issuer),
				jwt.WithAudience(ic.Audience),
				jwt.WithLeeway(ic.ClockSkew),
				jwt.WithExpirationRequired(),
				jwt.WithIssuedAt(),
			),
			setup: rate.NewLimiter(rate.Every(cfg.JWKSRefetchInterval), 1),
		}
	}
	return v
}

// Enabled reports whether any issuer is configured.
func (v *Verifier) Enabled() bool { return len(v.issuers) > 0 }

// Warm fetches every issuer's keys in the background, so that the first
// token does not wait for them. Close waits for it.
func (v *Verifier) Warm() {
	for _, is := range v.issuers {
		v.wg.Go(func() {
			ctx, cancel := context.WithTimeout(v.ctx, 2*v.cfg.JWKSTimeout)
			defer cancel()
			if _, err := v.keyfunc(ctx, is); err != nil {
				v.log.Warn("identity provider keys not loaded; tokens from it are refused until they are", "issuer", is.cfg.Issuer, "err", err)
			}
		})
	}
}

// Close stops the background refreshes and waits for Warm.
func (v *Verifier) Close() {
	v.cancel()
	v.wg.Wait()
}

// Verify checks token — signature, algorithm, issuer, audience, expiry —
// and maps its claims to an Identity. A refused token is a *TokenError; a
// valid one that grants no role is ErrNoRole.
func (v *Verifier) Verify(ctx context.Context, token string) (Identity, error) {
	if len(token) > maxTokenLen {
		return Identity{}, refused("the token is too large")
	}
	// Read the issuer and algorithm unverified, only to choose what to
	// verify with; nothing else from this parse is trusted.
	var peek jwt.MapClaims
	t, _, err := jwt.NewParser().ParseUnverified(token, &peek)
	switch {
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return Identity{}, refused("the signing algorithm is not accepted")
	case err != nil:
		return Identity{}, refused("the token is malformed")
	}
	iss, _ := peek["iss"].(string)
	is, ok := v.issuers[iss]
	if !ok {
		return Identity{}, refused("the issuer is not trusted")
	}
	if !slices.Contains(is.cfg.Algorithms, t.Method.Alg()) {
		return Identity{}, refused("the signing algorithm is not accepted")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*v.cfg.JWKSTimeout)
	defer cancel()
	keys, err := v.keyfunc(ctx, is)
	if err != nil {
		v.log.DebugContext(ctx, "identity provider keys unavailable", "issuer", iss, "err", err)
		return Identity{}, refused("the issuer's signing keys are unavailable")
	}
	var claims jwt.MapClaims
	if _, err := is.parser.ParseWithClaims(token, &claims, keys.KeyfuncCtx(ctx)); err != nil {
		v.log.DebugContext(ctx, "bearer token refused", "issuer", iss, "err", err)
		return Identity{}, refused(reason(err))
	}
	slug, err := is.tenant(claims)
	if err != nil {
		return Identity{}, err
	}
	role, err := is.role(claims)
	if err != nil {
		return Identity{}, err
	}
	sub, _ := claims["sub"].(string)
	return Identity{Issuer: iss, Subject: sub, Slug: slug, Role: role}, nil
}

// reason words a verification error for the client.
func reason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "the token has expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet), errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return "the token is not valid yet"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "the token is not for this audience"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "the issuer is not trusted"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "the token lacks an expiry"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "the token's signing key is unknown"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "the signature does not verify"
	}
	return "the token is malformed or invalid"
}

// tenant maps the tenant claim to a slug the issuer is trusted for.
func (is *issuer) tenant(claims jwt.MapClaims) (string, error) {
	v, _ := claims[is.cfg.TenantClaim].(string)
	if v == "" {
		return "", refused("the token names no tenant")
	}
	slug := v
	if len(is.cfg.TenantMap) > 0 {
		var ok bool
		if slug, ok = is.cfg.TenantMap[v]; !ok {
			return "", refused("the token's tenant is not mapped to a tenant")
		}
	}
	if !is.everyTenant && !slices.Contains(is.cfg.Tenants, slug) {
		return "", refused("the issuer is not trusted for the tenant the token names")
	}
	return slug, nil
}

var rank = map[Role]int{Viewer: 1, Editor: 2}

// role is the highest role the role claim or a mapped group gives, else the
// issuer's default role.
func (is *issuer) role(claims jwt.MapClaims) (Role, error) {
	var best Role
	raise := func(r Role) {
		if rank[r] > rank[best] {
			best = r
		}
	}
	if is.cfg.RoleClaim != "" {
		for _, s := range claimStrings(claims[is.cfg.RoleClaim]) {
			raise(Role(s))
		}
	}
	if is.cfg.GroupsClaim != "" {
		for _, g := range claimStrings(claims[is.cfg.GroupsClaim]) {
			raise(Role(is.cfg.GroupRoles[g]))
		}
	}
	if best == "" {
		best = Role(is.cfg.DefaultRole)
	}
	if rank[best] == 0 {
		return "", ErrNoRole
	}
	return best, nil
}

// claimStrings reads a claim that is a string or a list of strings.
func claimStrings(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// keyfunc returns the issuer's key source, setting it up — discovery, the
// first fetch — on first use. Attempts are rate-limited like refetches, and
// callers meanwhile wait at most for one attempt.
func (v *Verifier) keyfunc(ctx context.Context, is *issuer) (keyfunc.Keyfunc, error) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if is.keys != nil {
		return is.keys, nil
	}
	if !is.setup.Allow() {
		return nil, errors.New("key set not loaded; next attempt is rate-limited")
	}
	u := is.cfg.JWKSURL
	if u == "" {
		var err error
		if u, err = v.discover(ctx, is.cfg.Issuer); err != nil {
			return nil, err
		}
	}
	errorLog := func(u string) func(context.Context, error) {
		return func(ctx context.Context, err error) {
			v.log.WarnContext(ctx, "refresh identity provider keys", "issuer", is.cfg.Issuer, "jwks_url", u, "err", err)
		}
	}
	// A failed first fetch leaves an empty set that unknown key ids fetch
	// again, rate-limited: one background refresher per issuer, ever.
	keys, err := keyfunc.NewDefaultOverrideCtx(v.ctx, []string{u}, keyfunc.Override{
		Client:                  v.client,
		HTTPTimeout:             v.cfg.JWKSTimeout,
		RateLimitWaitMax:        v.cfg.JWKSTimeout,
		RefreshErrorHandlerFunc: errorLog,
		RefreshInterval:         v.cfg.JWKSRefreshInterval,
		RefreshUnknownKID:       rate.NewLimiter(rate.Every(v.cfg.JWKSRefetchInterval), 1),
	})
	if err != nil {
		return nil, fmt.Errorf("load keys of %s: %w", is.cfg.Issuer, err)
	}
	is.keys = keys
	return keys, nil
}

// discover reads jwks_uri from the issuer's OpenID Provider metadata.
func (v *Verifier) discover(ctx context.Context, iss string) (string, error) {
	u := strings.TrimSuffix(iss, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", fmt.Errorf("discover %s: %w", iss, err)
	}
	resp, err := v.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("discover %s: %w", iss, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("discover %s: %s answered %d", iss, u, resp.StatusCode)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		return "", fmt.Errorf("discover %s: %w", iss, err)
	}
	// OpenID Connect Discovery 1.0 §4.3: the document must name the issuer
	// it was fetched for.
	if doc.Issuer != iss {
		return "", fmt.Errorf("discover %s: the document names issuer %q", iss, doc.Issuer)
	}
	ju, err := url.Parse(doc.JWKSURI)
	if err != nil || ju.Host == "" || (ju.Scheme != "https" && !strings.HasPrefix(iss, "http://")) {
		return "", fmt.Errorf("discover %s: jwks_uri %q is not an https URL", iss, doc.JWKSURI)
	}
	return doc.JWKSURI, nil
}

// limitedBody caps what is read from an identity provider.
type limitedBody struct{ next http.RoundTripper }

func (l limitedBody) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := l.next.RoundTrip(r)
	if err == nil {
		resp.Body = struct {
			io.Reader
			io.Closer
		}{io.LimitReader(resp.Body, maxDocBytes), resp.Body}
	}
	return resp, err
}
