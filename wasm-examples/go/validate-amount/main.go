// Command validate-amount is a sidecar plugin for the bank demo: it rejects
// Deposit and Withdraw commands of kind account whose JSON payload has no
// amount, a non-positive or fractional amount, or an amount above the
// configured limit (config max_amount, default 1000000).
package main

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"

	"github.com/troupe-dev/troupe/plugins/sdk"
)

var maxAmount int64 = 1_000_000

func init() {
	if s, ok := sdk.Config("max_amount"); ok {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil && n > 0 {
			maxAmount = n
		} else {
			sdk.Warn("validate-amount: ignoring bad max_amount " + strconv.Quote(s))
		}
	}
	sdk.OnCommand(check)
}

func check(_ *sdk.Context, c *sdk.Command) sdk.Verdict {
	if reason := validate(c.Payload); reason != "" {
		sdk.Count("rejected", 1)
		return sdk.Reject(reason)
	}
	return sdk.Allow().Annotate("validated-by", "validate-amount")
}

// validate returns why payload is not acceptable, or "".
func validate(payload []byte) string {
	var body map[string]json.RawMessage
	if err := json.Unmarshal(payload, &body); err != nil || body == nil {
		return "payload is not a JSON object"
	}
	raw, ok := body["amount"]
	if !ok {
		return "amount is required"
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var num json.Number
	if err := dec.Decode(&num); err != nil {
		return "amount must be a number"
	}
	s := num.String()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil {
			return "amount must be a number"
		}
		switch {
		case math.IsInf(f, 0) || math.IsNaN(f):
			return "amount must be a number"
		case f > float64(maxAmount):
			// 1e300 is a whole number, just far too large.
			return "amount " + s + " exceeds the limit of " + strconv.FormatInt(maxAmount, 10)
		case f <= 0:
			return "amount must be positive, got " + s
		case f != math.Trunc(f):
			return "amount must be a whole number, got " + s
		}
		n = int64(f)
	}
	if n <= 0 {
		return "amount must be positive, got " + s
	}
	if n > maxAmount {
		return "amount " + s + " exceeds the limit of " + strconv.FormatInt(maxAmount, 10)
	}
	return ""
}

func main() {}
