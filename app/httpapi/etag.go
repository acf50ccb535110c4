package httpapi

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/bulkheadhq/bulkhead/app/finops"
)

// Conditional requests (RFC 9110 §8.8.3, §13.1): a resource that can be
// changed carries a strong ETag naming its row version — its updated_at in
// microseconds, which every write moves forward — so that If-Match can be
// compared in the write's own statement (no lost update between a read and
// a write) and If-None-Match can answer 304 without the body.
const headerETag = "ETag"

// versionedRoutes are the routes that answer with a version ETag.
var versionedRoutes = map[string]bool{
	"/v1/accounts/:id": true,
}

// versionTag is the strong entity tag of the row version at.
func versionTag(at time.Time) string {
	return `"` + strconv.FormatInt(at.UnixMicro(), 36) + `"`
}

// entityTags splits an If-Match or If-None-Match value into its entity
// tags (each with its quotes, and W/ when weak); star is true for "*". The
// generated binder has already refused the field given more than once.
func entityTags(field string) (tags []string, star bool) {
	for _, t := range strings.Split(field, ",") {
		t = strings.TrimSpace(t)
		switch {
		case t == "*":
			star = true
		case t != "":
			tags = append(tags, t)
		}
	}
	return tags, star
}

// precondition turns an If-Match into the row versions a write may change:
// nil when there is no If-Match or it is "*" (the row must merely exist,
// which the write finds out). Weak tags and tags that are not this
// server's never match (the strong comparison), so a list of only those
// fails with 412 — if the resource exists.
func precondition(ifMatch *IfMatch) *finops.Precondition {
	if ifMatch == nil {
		return nil
	}
	tags, star := entityTags(*ifMatch)
	if star {
		return nil
	}
	cond := &finops.Precondition{}
	for _, t := range tags {
		if len(t) < 3 || t[0] != '"' || t[len(t)-1] != '"' {
			continue // weak (W/"…") or malformed
		}
		micros, err := strconv.ParseInt(t[1:len(t)-1], 36, 64)
		if err != nil {
			continue
		}
		cond.Versions = append(cond.Versions, time.UnixMicro(micros))
	}
	return cond
}

// versioned answers a conditional GET of a versioned resource: its ETag,
// and 304 without a body when If-None-Match names it (the weak comparison:
// W/ is ignored), else 200 with v.
func versioned(c echo.Context, at time.Time, ifNoneMatch *IfNoneMatch, v any) error {
	etag := versionTag(at)
	c.Response().Header().Set(headerETag, etag)
	if ifNoneMatch != nil {
		tags, star := entityTags(*ifNoneMatch)
		for _, t := range tags {
			star = star || strings.TrimPrefix(t, "W/") == etag
		}
		if star {
			return c.NoContent(http.StatusNotModified)
		}
	}
	return c.JSON(http.StatusOK, v)
}
