package httpapi

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/bulkheadhq/bulkhead/isolation"
)

// A route given its own allowance reads a body for longer than the
// server's read timeout, and its transactions get its own bounds; any
// other route is cut off at the server's. This is how a route that
// streams large bodies (billing-export imports) gets more time.
func TestRouteAllowances(t *testing.T) {
	t.Parallel()
	long := isolation.Bounds{Statement: time.Hour}
	e := echo.New()
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		if p, _ := toProblem(err); p != nil {
			_ = c.String(p.Status, p.Detail)
		}
	}
	e.Use(allowances(map[string]Allowance{"POST /import": {Read: time.Minute, Bounds: long}}))
	handler := func(c echo.Context) error {
		b, err := io.ReadAll(c.Request().Body)
		if err != nil {
			return err
		}
		got, _ := isolation.BoundsFrom(c.Request().Context())
		return c.String(http.StatusOK, fmt.Sprintf("%d bytes, statement bound %s", len(b), got.Statement))
	}
	e.POST("/import", handler)
	e.POST("/other", handler)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: e, ReadTimeout: 200 * time.Millisecond, WriteTimeout: time.Minute}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	// post sends the headers and half the body, waits past the server's
	// read timeout, then sends the rest.
	post := func(path string) (int, string) {
		t.Helper()
		c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Minute))
		fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345", path)
		time.Sleep(time.Second) // the server's read timeout is 200ms
		c.Write([]byte("67890"))
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, body := post("/import"); code != 200 || body != "10 bytes, statement bound 1h0m0s" {
		t.Errorf("the route with an allowance: %d %q", code, body)
	}
	if code, body := post("/other"); code != http.StatusRequestTimeout || !strings.Contains(body, "did not arrive") {
		t.Errorf("a route without: %d %q", code, body)
	}
}
