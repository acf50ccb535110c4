package httpapi_test

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/bulkheadhq/bulkhead/app/finops"
	"github.com/bulkheadhq/bulkhead/app/httpapi"
)

// The OpenAPI document lists the summary's groupings as a pattern, which
// the console reads to offer them: it names exactly the domain's fixed
// groupings and the tag prefix, so neither can drift from the other.
func TestGroupByPatternNamesEveryGrouping(t *testing.T) {
	t.Parallel()
	doc, err := httpapi.GetSwagger()
	if err != nil {
		t.Fatal(err)
	}
	p := doc.Components.Parameters["GroupBy"]
	if p == nil || p.Value == nil || p.Value.Schema == nil || p.Value.Schema.Value == nil {
		t.Fatal("no GroupBy parameter schema in the OpenAPI document")
	}
	pattern := p.Value.Schema.Value.Pattern
	m := regexp.MustCompile(`^\^\((.*)\)\$$`).FindStringSubmatch(pattern)
	if m == nil {
		t.Fatalf("GroupBy pattern %q is not ^(a|b|…)$", pattern)
	}
	got, want := strings.Split(m[1], "|"), []string(nil)
	for _, g := range finops.Groupings {
		want = append(want, string(g))
	}
	want = append(want, finops.TagPrefix+".+")
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("GroupBy pattern alternatives %v, want %v", got, want)
	}
	re := regexp.MustCompile(pattern)
	for _, ok := range []string{"service", "month", "tag:team"} {
		if !re.MatchString(ok) {
			t.Errorf("pattern refuses %q", ok)
		}
	}
	for _, bad := range []string{"", "tag:", "services", "service;drop"} {
		if re.MatchString(bad) {
			t.Errorf("pattern accepts %q", bad)
		}
	}
}
