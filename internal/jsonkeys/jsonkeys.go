// Package jsonkeys refuses JSON objects that name a key twice.
//
// encoding/json keeps the last of two members with the same name and says
// nothing: a body such as {"amount": "1", "amount": "1000000"} would mean
// to Bulkhead what it means to no reader that keeps the first. Every JSON
// document a client or an import file sends is checked here, at any
// depth, before it is decoded.
package jsonkeys

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// MaxDepth bounds how deeply arrays and objects may nest; deeper is an
// error, so that no document costs more than its length to check.
const MaxDepth = 1000

// DuplicateError names a key an object holds twice, and where: Path is the
// object's place in the document ("" for the top level, then ".key" and
// "[3]" steps, as in "[3].tags").
type DuplicateError struct {
	Path string
	Key  string
}

func (e *DuplicateError) Error() string {
	where := "the top-level object"
	if e.Path != "" {
		where = "the object at " + e.Path
	}
	return fmt.Sprintf("duplicate key %q in %s", e.Key, where)
}

// ErrTooDeep is returned for a document nested deeper than MaxDepth.
var ErrTooDeep = fmt.Errorf("JSON nested more than %d levels deep", MaxDepth)

// frame is an array or object being read.
type frame struct {
	path    string
	keys    map[string]bool // nil for an array
	key     string          // the member being read (objects)
	wantKey bool            // the next token is a key or the end (objects)
	index   int             // the next element's index (arrays)
}

// Unique checks the first JSON value of data. It returns a
// *DuplicateError for the first object that names a key twice,
// ErrTooDeep, or the decoder's error (*json.SyntaxError,
// io.ErrUnexpectedEOF; io.EOF when data holds no value) when the value is
// not well-formed; nil otherwise.
// Keys are compared as decoded: "a" and "\u0061" are the same key. What
// follows the first value is the caller's to refuse.
func Unique(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var stack []*frame
	for started := false; ; started = true {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) && !started {
			return io.EOF // no value at all
		}
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF // the value never completed
		}
		if err != nil {
			return err
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		path := ""
		switch {
		case top != nil && top.keys != nil && top.wantKey:
			if tok == json.Delim('}') {
				stack = stack[:len(stack)-1]
				if len(stack) == 0 {
					return nil
				}
				continue
			}
			key, _ := tok.(string) // keys decode as strings
			if top.keys[key] {
				return &DuplicateError{Path: top.path, Key: key}
			}
			top.keys[key], top.key, top.wantKey = true, key, false
			continue
		case top != nil && top.keys != nil:
			path, top.wantKey = top.path+"."+top.key, true
		case top != nil:
			if tok == json.Delim(']') {
				stack = stack[:len(stack)-1]
				if len(stack) == 0 {
					return nil
				}
				continue
			}
			path = top.path + "[" + strconv.Itoa(top.index) + "]"
			top.index++
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{path: path, keys: map[string]bool{}, wantKey: true})
		case json.Delim('['):
			stack = append(stack, &frame{path: path})
		}
		if len(stack) > MaxDepth {
			return ErrTooDeep
		}
		if len(stack) == 0 {
			return nil // a scalar at the top
		}
	}
}
