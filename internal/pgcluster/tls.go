package pgcluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"time"
)

// ClientTLS names the files a client presents and verifies with: the
// authority that signed the server's certificate (and its own), and its
// certificate and key.
type ClientTLS struct {
	CAFile   string
	CertFile string
	KeyFile  string
}

// dsn is the DSN of user on database over TLS with c's certificate. The
// server's certificate is checked against the authority but not its name
// (verify-ca): every node of a cluster shares one certificate.
func (c *ClientTLS) dsn(port int, user, database string) string {
	q := url.Values{}
	q.Set("sslmode", "verify-ca")
	q.Set("sslrootcert", c.CAFile)
	q.Set("sslcert", c.CertFile)
	q.Set("sslkey", c.KeyFile)
	u := url.URL{
		Scheme:   "postgres",
		User:     url.User(user),
		Host:     net.JoinHostPort(host, strconv.Itoa(port)),
		Path:     "/" + database,
		RawQuery: q.Encode(),
	}
	return u.String()
}

// conninfo is c as libpq keywords, for citus.node_conninfo.
func (c *ClientTLS) conninfo() string {
	return "sslmode=verify-ca sslrootcert=" + conninfoValue(c.CAFile) +
		" sslcert=" + conninfoValue(c.CertFile) + " sslkey=" + conninfoValue(c.KeyFile)
}

// conninfoValue quotes v for a libpq keyword/value connection string.
func conninfoValue(v string) string {
	out := []byte{'\''}
	for i := 0; i < len(v); i++ {
		if v[i] == '\'' || v[i] == '\\' {
			out = append(out, '\\')
		}
		out = append(out, v[i])
	}
	return string(append(out, '\''))
}

// writeNodeTLS creates, in dir, a throwaway certificate authority and one
// certificate signed by it that every node of a cluster uses both to serve
// and to connect to the others: ca.crt, node.crt and node.key, owned by a
// and readable by it alone, as PostgreSQL and libpq require of a key.
func writeNodeTLS(dir string, a *account) (*ClientTLS, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "bulkhead throwaway cluster CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTpl, caTpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	nodeKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	nodeTpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "bulkhead-cluster-node"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP(host)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	nodeDER, err := x509.CreateCertificate(rand.Reader, nodeTpl, ca, &nodeKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create node certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(nodeKey)
	if err != nil {
		return nil, err
	}
	t := &ClientTLS{
		CAFile:   filepath.Join(dir, "ca.crt"),
		CertFile: filepath.Join(dir, "node.crt"),
		KeyFile:  filepath.Join(dir, "node.key"),
	}
	for path, block := range map[string]*pem.Block{
		t.CAFile:   {Type: "CERTIFICATE", Bytes: caDER},
		t.CertFile: {Type: "CERTIFICATE", Bytes: nodeDER},
		t.KeyFile:  {Type: "PRIVATE KEY", Bytes: keyDER},
	} {
		if err := writeOwned(path, string(pem.EncodeToMemory(block)), a); err != nil {
			return nil, err
		}
	}
	return t, nil
}
