package finops

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
)

// TooLargeError is a billing export over its size limit
// (import.max_bytes), compressed or decompressed. Nothing is written.
type TooLargeError struct{ Limit int64 }

func (e *TooLargeError) Error() string {
	return fmt.Sprintf("the billing export exceeds the import limit of %d bytes (import.max_bytes)", e.Limit)
}

// LimitReader returns a reader of r that fails with a *TooLargeError once
// more than n bytes were read from it.
func LimitReader(r io.Reader, n int64) io.Reader { return &limitedReader{r: r, left: n, limit: n} }

type limitedReader struct {
	r           io.Reader
	left, limit int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left < 0 {
		return 0, &TooLargeError{l.limit}
	}
	// Read one byte past the limit to tell "exactly the limit" from "over".
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return n + int(l.left), &TooLargeError{l.limit}
	}
	return n, err
}

// CountingReader counts the bytes read through it, and adds them to Into
// as well when set (several parts, one count); N is safe to call from
// another goroutine (a progress bar).
type CountingReader struct {
	R    io.Reader
	Into *CountingReader
	n    atomic.Int64
}

func (c *CountingReader) Read(p []byte) (int, error) {
	n, err := c.R.Read(p)
	c.n.Add(int64(n))
	if c.Into != nil {
		c.Into.n.Add(int64(n))
	}
	return n, err
}

// N returns how many bytes were read so far.
func (c *CountingReader) N() int64 { return c.n.Load() }

// Gunzip returns a reader of the gzip stream r, decompressed, that fails
// with a *TooLargeError past max decompressed bytes (a small body must not
// expand without bound). A body that is not gzip is a *FormatError.
func Gunzip(r io.Reader, max int64) (io.Reader, error) {
	z, err := gzip.NewReader(r)
	if err != nil {
		var tl *TooLargeError
		if errors.As(err, &tl) {
			return nil, err
		}
		return nil, &FormatError{"body: Content-Encoding gzip, but the body is not gzip: " + err.Error()}
	}
	return &gzipErrors{LimitReader(z, max)}, nil
}

// gzipErrors words a corrupt stream for the client.
type gzipErrors struct{ r io.Reader }

func (g *gzipErrors) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	if errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) || errors.Is(err, io.ErrUnexpectedEOF) {
		err = &FormatError{"body: corrupt or truncated gzip stream: " + err.Error()}
	}
	return n, err
}

// Magic numbers of the formats a billing export comes in.
var (
	gzipMagic    = []byte{0x1f, 0x8b}
	parquetMagic = []byte("PAR1")
)

// SniffImport tells a billing export's format from its first bytes:
// "gzip", "parquet" or "csv". It returns a reader yielding r from its start.
func SniffImport(r io.Reader) (string, io.Reader, error) {
	br := bufio.NewReader(r)
	b, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return "", br, err
	}
	switch {
	case bytes.HasPrefix(b, gzipMagic):
		return "gzip", br, nil
	case bytes.HasPrefix(b, parquetMagic):
		return "parquet", br, nil
	}
	return "csv", br, nil
}

// SpoolParquet copies the Parquet body r (at most max bytes) into a
// temporary file in dir (the system's when empty) and opens it as a FOCUS
// source: Parquet keeps its schema at its end, so it cannot be read as it
// arrives, and the body goes to disk, never to memory. done removes the
// file; call it once the source is no longer read.
func SpoolParquet(r io.Reader, dir string, max int64) (src FOCUSSource, done func(), err error) {
	f, err := os.CreateTemp(dir, "bulkhead-import-*.parquet")
	if err != nil {
		return nil, nil, fmt.Errorf("spool Parquet body: %w", err)
	}
	done = func() {
		f.Close()
		os.Remove(f.Name())
	}
	n, err := io.Copy(f, LimitReader(r, max))
	if err != nil {
		done()
		return nil, nil, err
	}
	if src, err = NewParquetSource(f, n); err != nil {
		done()
		return nil, nil, err
	}
	return src, done, nil
}
