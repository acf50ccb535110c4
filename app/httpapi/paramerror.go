package httpapi

import "fmt"

// paramError is a path, query or header parameter the generated wrappers
// could not bind (templates/echo-wrappers.tmpl makes them return it). It
// is answered 400 in the API's own words, from the parameter's type and
// format in the spec; the binder's error (strconv's, uuid's) stays in Err
// for the log and never reaches the client.
type paramError struct {
	Name string
	// In is where the parameter was: path, query, header or cookie.
	In string
	// Type and Format are the parameter's schema type and format.
	Type, Format string
	// Missing is set for a required parameter that was not sent;
	// Repeated, for a header sent that many times.
	Missing  bool
	Repeated int
	Err      error
}

func (e *paramError) Error() string { return e.detail() }

func (e *paramError) Unwrap() error { return e.Err }

// detail words the problem for the client.
func (e *paramError) detail() string {
	what := e.In + " parameter " + e.Name
	switch {
	case e.Missing:
		return what + ": required"
	case e.Repeated > 0:
		return fmt.Sprintf("%s: sent %d times; send it once", what, e.Repeated)
	}
	return what + ": " + expected(e.Type, e.Format)
}

// expected says what a parameter of the schema type and format must be.
func expected(typ, format string) string {
	switch format {
	case "uuid":
		return "must be a UUID"
	case "date":
		return "must be a date that exists, written YYYY-MM-DD"
	case "date-time":
		return "must be a date and time, written as in RFC 3339 (2026-01-31T12:00:00Z)"
	}
	switch typ {
	case "integer":
		return "must be a whole number"
	case "number":
		return "must be a number"
	case "boolean":
		return "must be true or false"
	case "array":
		return "must be a comma-separated list"
	}
	return "is not valid here"
}
