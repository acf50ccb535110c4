package jsonkeys_test

import (
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/bulkheadhq/bulkhead/internal/jsonkeys"
)

func TestUnique(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		doc  string
		path string // of the duplicate; "-" when there is none
		key  string
	}{
		{`{"a": 1, "b": 2}`, "-", ""},
		{`[{"a": 1}, {"a": 2}]`, "-", ""},
		{`"a"`, "-", ""},
		{`{"a": {"a": 1}, "b": [{"a": 1, "c": {"a": 2}}]}`, "-", ""},
		{`{"amount": "1", "amount": "1000000"}`, "", "amount"},
		{`{"a": 1, "\u0061": 2}`, "", "a"},
		{`[{"a": 1}, {"b": 1, "b": 2}]`, "[1]", "b"},
		{`{"x": {"y": [0, {"z": 1, "z": 1}]}}`, ".x.y[1]", "z"},
		{`{"x": [], "y": {}, "x": null}`, "", "x"},
	} {
		err := jsonkeys.Unique([]byte(c.doc))
		var dup *jsonkeys.DuplicateError
		switch {
		case c.path == "-" && err != nil:
			t.Errorf("%s: %v", c.doc, err)
		case c.path != "-" && (!errors.As(err, &dup) || dup.Path != c.path || dup.Key != c.key):
			t.Errorf("%s: %v, want the duplicate %q at %q", c.doc, err, c.key, c.path)
		}
	}
}

func TestUniqueRefusesWhatIsNotJSON(t *testing.T) {
	t.Parallel()
	var syntax *json.SyntaxError
	if err := jsonkeys.Unique([]byte(`{"a": }`)); !errors.As(err, &syntax) {
		t.Errorf("malformed: %v", err)
	}
	if err := jsonkeys.Unique([]byte(`{"a": [1, 2`)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated: %v", err)
	}
	if err := jsonkeys.Unique([]byte(" \n")); !errors.Is(err, io.EOF) {
		t.Errorf("empty: %v", err)
	}
	deep := strings.Repeat("[", jsonkeys.MaxDepth+1) + strings.Repeat("]", jsonkeys.MaxDepth+1)
	if err := jsonkeys.Unique([]byte(deep)); !errors.Is(err, jsonkeys.ErrTooDeep) {
		t.Errorf("nested %d deep: %v", jsonkeys.MaxDepth+1, err)
	}
	ok := strings.Repeat("[", jsonkeys.MaxDepth) + strings.Repeat("]", jsonkeys.MaxDepth)
	if err := jsonkeys.Unique([]byte(ok)); err != nil {
		t.Errorf("nested %d deep: %v", jsonkeys.MaxDepth, err)
	}
}
