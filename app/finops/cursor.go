package finops

import (
	"encoding/base64"
	"encoding/json"
	"errors"
)

// ErrBadCursor is returned for a cursor the list did not produce.
var ErrBadCursor = errors.New("cursor: not a cursor this list returned")

// cursor is a keyset position: the sort key of the last item of a page,
// opaque to clients (base64url of a JSON array).
func encodeCursor(key ...string) string {
	b, _ := json.Marshal(key) // strings always marshal
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodeCursor returns the n-part key of c, or ErrBadCursor.
func decodeCursor(c string, n int) ([]string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	var key []string
	if err == nil {
		err = json.Unmarshal(b, &key)
	}
	if err != nil || len(key) != n {
		return nil, ErrBadCursor
	}
	return key, nil
}
