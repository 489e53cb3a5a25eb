package bank

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/troupe-dev/troupe/actors/codes"
)

// badParams is a query's params that are malformed: invalid_argument for
// the client (not a rejection, which is about the state of an entity).
func badParams(query, format string, args ...any) error {
	return &codes.Error{Code: codes.InvalidArgument, Message: query + " query: " + fmt.Sprintf(format, args...)}
}

// decodeParams decodes a query's params strictly: an unknown field (a typo
// such as "limt") is an error that names it, not a silent default. Errors
// name the field and what it should be, in JSON's terms.
func decodeParams(query string, params json.RawMessage, v any) error {
	dec := json.NewDecoder(bytes.NewReader(params))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badParams(query, "params: %s", describeJSONError(err))
	}
	if dec.More() {
		return badParams(query, "params: trailing data after the JSON value")
	}
	return nil
}

func describeJSONError(err error) string {
	var (
		te *json.UnmarshalTypeError
		se *json.SyntaxError
	)
	switch {
	case errors.As(err, &te):
		want := "another value"
		switch te.Type.Kind() {
		case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint, reflect.Uint64, reflect.Uint32:
			want = "a whole number"
		case reflect.Float64, reflect.Float32:
			want = "a number"
		case reflect.String:
			want = "a string"
		case reflect.Bool:
			want = "true or false"
		case reflect.Struct, reflect.Map:
			want = "an object"
		}
		if te.Field == "" {
			return fmt.Sprintf("want %s, got %s", want, te.Value)
		}
		return fmt.Sprintf("%q: want %s, got %s", te.Field, want, te.Value)
	case errors.As(err, &se):
		return fmt.Sprintf("not valid JSON at byte %d", se.Offset)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// Cursor is a page cursor: the "next" of a page, given back as "after".
// It is a string on the wire; a JSON number is accepted too, since the
// cursors are decimal sequence numbers and clients copy them as numbers.
type Cursor string

// UnmarshalJSON accepts a JSON string or a non-negative whole number.
func (c *Cursor) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*c = Cursor(s)
		return nil
	}
	if string(b) == "null" {
		*c = ""
		return nil
	}
	if _, err := strconv.ParseUint(string(b), 10, 64); err != nil {
		return &json.UnmarshalTypeError{Value: "number " + string(b), Type: reflect.TypeFor[string]()}
	}
	*c = Cursor(b)
	return nil
}
