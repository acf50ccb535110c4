// Package oidctest is an identity provider for tests: OpenID discovery and
// a JWKS served on a loopback port, and tokens signed with its keys —
// RS256 and ES256 — or forged in the ways attackers forge them. It is also
// an authorization server for a browser's sign-in: the Authorization Code
// flow with PKCE (S256) for the public clients a test registers, signing
// in whoever the test says is at the keyboard.
package oidctest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// IDP is an identity provider for tests: it serves its discovery document
// and JWKS on a loopback httptest server, counts JWKS fetches, and signs
// tokens with the keys it holds.
type IDP struct {
	srv     *httptest.Server
	Fetches atomic.Int64
	// TokenRequests counts the token endpoint's requests, answered or not.
	TokenRequests atomic.Int64

	mu      sync.Mutex
	keys    map[string]any    // kid → private key
	served  []string          // kids the JWKS lists
	clients map[string]string // client id → its one redirect URI
	user    jwt.MapClaims     // who signs in at the authorization endpoint
	grants  map[string]grant  // code → what it was issued for
	asked   []url.Values      // the authorization requests, in order
	hold    chan struct{}     // while open, the token endpoint waits
}

// grant is what an authorization code stands for until it is redeemed.
type grant struct {
	client, redirect, challenge, nonce string
	claims                             jwt.MapClaims
	expires                            time.Time
}

// New starts an identity provider until t ends.
func New(t testing.TB) *IDP {
	t.Helper()
	p := &IDP{keys: map[string]any{}, clients: map[string]string{}, grants: map[string]grant{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		p.cors(w, r)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"issuer": p.Issuer(), "jwks_uri": p.JWKSURL(),
			"authorization_endpoint": p.Issuer() + "/authorize", "token_endpoint": p.Issuer() + "/token",
			"response_types_supported": []string{"code"}, "grant_types_supported": []string{"authorization_code"},
			"code_challenge_methods_supported": []string{"S256"}, "subject_types_supported": []string{"public"},
			"id_token_signing_alg_values_supported": []string{"RS256", "ES256"},
			"token_endpoint_auth_methods_supported": []string{"none"},
		})
	})
	mux.HandleFunc("GET /authorize", p.authorize)
	mux.HandleFunc("POST /token", p.token)
	mux.HandleFunc("GET /keys", func(w http.ResponseWriter, r *http.Request) {
		p.Fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Write(p.jwks())
	})
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.Close)
	return p
}

// Close stops serving: the provider becomes unreachable.
func (p *IDP) Close() { p.srv.Close() }

// Issuer is the provider's issuer URL.
func (p *IDP) Issuer() string { return p.srv.URL }

var (
	keyOnce sync.Once
	rsaKeys []*rsa.PrivateKey
)

// AddRSA makes kid an RS256 key and serves it.
func (p *IDP) AddRSA(t testing.TB, kid string) {
	t.Helper()
	keyOnce.Do(func() { // RSA keys are slow to make: share a few
		for range 3 {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaKeys = append(rsaKeys, k)
		}
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys[kid] = rsaKeys[len(p.keys)%len(rsaKeys)]
	p.served = append(p.served, kid)
}

// AddEC makes kid an ES256 key and serves it.
func (p *IDP) AddEC(t testing.TB, kid string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys[kid] = k
	p.served = append(p.served, kid)
}

// Serve replaces the kids the JWKS lists (keys are kept for signing).
func (p *IDP) Serve(kids ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.served = kids
}

func (p *IDP) jwks() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	b64 := base64.RawURLEncoding.EncodeToString
	var keys []map[string]string
	for _, kid := range p.served {
		switch k := p.keys[kid].(type) {
		case *rsa.PrivateKey:
			keys = append(keys, map[string]string{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
				"n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())})
		case *ecdsa.PrivateKey:
			x, y := make([]byte, 32), make([]byte, 32)
			k.X.FillBytes(x)
			k.Y.FillBytes(y)
			keys = append(keys, map[string]string{"kty": "EC", "kid": kid, "use": "sig", "alg": "ES256",
				"crv": "P-256", "x": b64(x), "y": b64(y)})
		}
	}
	b, _ := json.Marshal(map[string]any{"keys": keys})
	return b
}

// Sign signs claims with kid's key, naming kid in the header.
func (p *IDP) Sign(t testing.TB, kid string, claims jwt.MapClaims) string {
	t.Helper()
	s, err := p.sign(kid, claims)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (p *IDP) sign(kid string, claims jwt.MapClaims) (string, error) {
	p.mu.Lock()
	key := p.keys[kid]
	p.mu.Unlock()
	var m jwt.SigningMethod = jwt.SigningMethodRS256
	if _, ok := key.(*ecdsa.PrivateKey); ok {
		m = jwt.SigningMethodES256
	}
	tok := jwt.NewWithClaims(m, claims)
	tok.Header["kid"] = kid
	return tok.SignedString(key)
}

// Client registers a public client (no secret: PKCE) with its one
// redirect URI. The provider answers CORS requests from that URI's origin.
func (p *IDP) Client(id, redirectURI string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clients[id] = redirectURI
}

// LogIn says who signs in at the authorization endpoint from now on: the
// access token carries claims (p.Claims, say), the ID token their sub. Nil
// is nobody: the provider answers access_denied.
func (p *IDP) LogIn(claims jwt.MapClaims) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.user = claims
}

// Authorizations are the authorization requests received, in order.
func (p *IDP) Authorizations() []url.Values {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.asked)
}

// Hold makes the token endpoint wait before answering, until release is
// called (or the request ends): a test looks at the client meanwhile.
func (p *IDP) Hold() (release func()) {
	ch := make(chan struct{})
	p.mu.Lock()
	p.hold = ch
	p.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			p.mu.Lock()
			p.hold = nil
			p.mu.Unlock()
			close(ch)
		})
	}
}

// cors lets a registered client's origin read the answer.
func (p *IDP) cors(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, redirect := range p.clients {
		if u, err := url.Parse(redirect); err == nil && origin == u.Scheme+"://"+u.Host {
			w.Header().Set("Access-Control-Allow-Origin", origin)
			w.Header().Add("Vary", "Origin")
			return
		}
	}
}

// authorize is the authorization endpoint: it checks the request as a
// provider must (a registered client and its exact redirect URI, a code
// challenge with S256) and redirects back with a code for the user of
// LogIn, or with an error.
func (p *IDP) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p.mu.Lock()
	p.asked = append(p.asked, q)
	redirect, known := p.clients[q.Get("client_id")]
	user := p.user
	p.mu.Unlock()
	if !known || q.Get("redirect_uri") != redirect {
		// Never redirect to a URI not registered for the client.
		http.Error(w, "unknown client or redirect_uri", http.StatusBadRequest)
		return
	}
	back, _ := url.Parse(redirect)
	answer := url.Values{"state": {q.Get("state")}, "iss": {p.Issuer()}}
	switch {
	case q.Get("response_type") != "code":
		answer.Set("error", "unsupported_response_type")
	case q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43:
		answer.Set("error", "invalid_request")
		answer.Set("error_description", "PKCE with S256 is required")
	case !slices.Contains(strings.Fields(q.Get("scope")), "openid"):
		answer.Set("error", "invalid_scope")
	case user == nil:
		answer.Set("error", "access_denied")
	default:
		code := rand.Text()
		p.mu.Lock()
		p.grants[code] = grant{client: q.Get("client_id"), redirect: redirect, challenge: q.Get("code_challenge"),
			nonce: q.Get("nonce"), claims: user, expires: time.Now().Add(time.Minute)}
		p.mu.Unlock()
		answer.Set("code", code)
	}
	back.RawQuery = answer.Encode()
	http.Redirect(w, r, back.String(), http.StatusFound)
}

// token is the token endpoint: a code redeemed once, by its client, with
// its redirect URI and the verifier of its challenge, for an access token
// (the LogIn claims) and an ID token (sub, aud the client, the nonce).
func (p *IDP) token(w http.ResponseWriter, r *http.Request) {
	p.TokenRequests.Add(1)
	p.mu.Lock()
	hold := p.hold
	p.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
	}
	p.cors(w, r)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json")
	fail := func(code, why string) {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": why})
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "authorization_code" {
		fail("unsupported_grant_type", "authorization_code only")
		return
	}
	f := r.PostForm
	p.mu.Lock()
	g, ok := p.grants[f.Get("code")]
	delete(p.grants, f.Get("code")) // once, whatever comes of it
	kids := slices.Clone(p.served)
	p.mu.Unlock()
	sum := sha256.Sum256([]byte(f.Get("code_verifier")))
	switch {
	case !ok || time.Now().After(g.expires):
		fail("invalid_grant", "unknown or used code")
		return
	case f.Get("client_id") != g.client || f.Get("redirect_uri") != g.redirect:
		fail("invalid_grant", "the code was issued to another client or redirect_uri")
		return
	case base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge:
		fail("invalid_grant", "the code_verifier does not match the code_challenge")
		return
	case len(kids) == 0:
		fail("server_error", "no signing key")
		return
	}
	now := time.Now()
	access, err := p.sign(kids[0], g.claims)
	if err != nil {
		fail("server_error", err.Error())
		return
	}
	id, err := p.sign(kids[0], jwt.MapClaims{"iss": p.Issuer(), "sub": g.claims["sub"], "aud": g.client, "nonce": g.nonce,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix()})
	if err != nil {
		fail("server_error", err.Error())
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"access_token": access, "id_token": id, "token_type": "Bearer", "expires_in": 3600})
}

// JWKSURL is where the provider serves its key set.
func (p *IDP) JWKSURL() string { return p.Issuer() + "/keys" }

// Claims are valid claims for p and audience "bulkhead", naming tenant.
func (p *IDP) Claims(tenant string) jwt.MapClaims {
	now := time.Now()
	return jwt.MapClaims{
		"iss": p.Issuer(), "aud": "bulkhead", "sub": "user-1",
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"org": tenant, "role": "editor",
	}
}

// SignAs signs claims with kid's key but names header in the token's kid.
func (p *IDP) SignAs(t testing.TB, kid, header string, claims jwt.MapClaims) string {
	t.Helper()
	tok := p.Sign(t, kid, claims)
	parts := strings.Split(tok, ".")
	h := fmt.Sprintf(`{"alg":"RS256","kid":%q,"typ":"JWT"}`, header)
	parts[0] = base64.RawURLEncoding.EncodeToString([]byte(h))
	return strings.Join(parts, ".")
}

// Unsigned is claims as an alg "none" token.
func Unsigned(claims jwt.MapClaims) string {
	s, err := jwt.NewWithClaims(jwt.SigningMethodNone, claims).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		panic(err) // none with its marker cannot fail
	}
	return s
}

// HMACWithPublicKey is the classic confusion attack: an HS256 token keyed
// with the PEM of kid's published RSA key.
func (p *IDP) HMACWithPublicKey(t testing.TB, kid string, claims jwt.MapClaims) string {
	t.Helper()
	p.mu.Lock()
	pub := &p.keys[kid].(*rsa.PrivateKey).PublicKey
	p.mu.Unlock()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(pemKey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
