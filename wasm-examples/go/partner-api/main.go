// Command partner-api is an ambassador plugin for a partner's HTTP payment
// API. Actors call it by name ("partner-api") with operation "charge" and a
// JSON payload {"account":"acc-1","amount":100}. It POSTs the charge to
// {base_url}/v1/charges with the API token from the secret api_token,
// retries 5xx answers and transport errors with exponential backoff
// (its own policy, up to max_attempts), and maps the partner's answer to
// {"charge_id":"...","status":"..."}. A 4xx answer rejects the call with
// the partner's message.
package main

import (
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/troupe-dev/troupe/plugins/sdk"
)

type chargeIn struct {
	Account string `json:"account"`
	Amount  int64  `json:"amount"`
}

type partnerCharge struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Error  string `json:"error"`
}

type chargeOut struct {
	ChargeID string `json:"charge_id"`
	Status   string `json:"status"`
	Attempts int    `json:"attempts"`
}

func init() {
	sdk.OnCall(handle)
}

func handle(_ *sdk.Context, c *sdk.Call) sdk.Verdict {
	if c.Operation != "charge" {
		return sdk.Reject("unknown operation " + strconv.Quote(c.Operation))
	}
	var in chargeIn
	if err := json.Unmarshal(c.Payload, &in); err != nil || in.Account == "" || in.Amount <= 0 {
		return sdk.Reject(`want {"account": "...", "amount": > 0}`)
	}
	base, ok := sdk.Config("base_url")
	if !ok {
		return sdk.Fail(errors.New("config base_url is not set"))
	}
	token, ok := sdk.Secret("api_token")
	if !ok {
		return sdk.Fail(errors.New("secret api_token is not granted"))
	}
	attempts := 3
	if s, ok := sdk.Config("max_attempts"); ok {
		if n, err := strconv.Atoi(s); err == nil && n > 0 && n <= 10 {
			attempts = n
		}
	}
	body, _ := json.Marshal(map[string]any{"account": in.Account, "amount": in.Amount, "idempotency_key": c.Metadata["idempotency-key"]})
	req := sdk.HTTPRequest{
		Method: "POST",
		URL:    base + "/v1/charges",
		Headers: map[string]string{
			"Authorization": "Bearer " + token,
			"Content-Type":  "application/json",
		},
		Body:      body,
		TimeoutMs: 2000,
	}
	backoff := 10 * time.Millisecond
	var last string
	for i := 1; i <= attempts; i++ {
		resp, err := sdk.HTTP(req)
		switch {
		case err != nil:
			last = err.Error()
		case resp.Status >= 500:
			last = "partner answered " + strconv.Itoa(int(resp.Status))
		case resp.Status >= 400:
			var pc partnerCharge
			_ = json.Unmarshal(resp.Body, &pc)
			if pc.Error == "" {
				pc.Error = "status " + strconv.Itoa(int(resp.Status))
			}
			return sdk.Reject("partner refused the charge: " + pc.Error)
		default:
			var pc partnerCharge
			if err := json.Unmarshal(resp.Body, &pc); err != nil || pc.ID == "" {
				return sdk.Fail(errors.New("partner answered an unexpected body"))
			}
			out, _ := json.Marshal(chargeOut{ChargeID: pc.ID, Status: pc.Status, Attempts: i})
			sdk.Count("charges", 1)
			return sdk.Respond(sdk.Reply{
				Payload:     out,
				ContentType: "application/json",
				Metadata:    map[string]string{"partner-request-id": resp.Headers["X-Request-Id"]},
			})
		}
		sdk.Warn("partner-api: attempt " + strconv.Itoa(i) + " failed: " + last)
		sdk.Count("retries", 1)
		if i < attempts {
			time.Sleep(backoff) // needs the clock grant to really wait
			backoff *= 2
		}
	}
	return sdk.Fail(errors.New("partner unavailable after " + strconv.Itoa(attempts) + " attempts: " + last))
}

func main() {}
