package main

import (
	"fmt"
	"testing"
	"time"
)

// queryOK runs a query over HTTP and returns its result and position.
func queryOK(t *testing.T, url, body string) (any, string) {
	t.Helper()
	code, out := post(t, url, "QueryService/Query", body)
	if code != 200 {
		t.Fatalf("query %s: %d %v", body, code, out)
	}
	pos, _ := out["position"].(string)
	return out["result"], pos
}

// transferDone polls the transfer query until the transfer is over and
// returns its final row and the position the answer reflects.
func transferDone(t *testing.T, url, id string) (map[string]any, string) {
	t.Helper()
	var row map[string]any
	var pos string
	waitFor(t, 10*time.Second, func() bool {
		code, out := post(t, url, "QueryService/Query", fmt.Sprintf(`{"name":"transfer","params":{"id":%q}}`, id))
		if code == 404 {
			return false // the transfers read model has not seen the start yet
		}
		if code != 200 {
			t.Fatalf("transfer query: %d %v", code, out)
		}
		row, _ = out["result"].(map[string]any)
		pos, _ = out["position"].(string)
		s := row["status"]
		return s == "completed" || s == "failed" || s == "compensated"
	})
	return row, pos
}

func TestTransferThroughTheBinary(t *testing.T) {
	p := startNode(t, t.TempDir())
	for _, id := range []string{"acc-a", "acc-b"} {
		send(t, p.url, fmt.Sprintf(`{"kind":"account","id":%q,"type":"Open","payload":{"owner":"x"}}`, id))
	}
	send(t, p.url, `{"kind":"account","id":"acc-a","type":"Deposit","payload":{"amount":100}}`)

	send(t, p.url, `{"kind":"transfer","id":"t1","type":"Start","payload":{"from":"acc-a","to":"acc-b","amount":40}}`)
	row, pos := transferDone(t, p.url, "t1")
	if row["status"] != "completed" {
		t.Fatalf("transfer t1 ended %v", row)
	}
	// Read with the transfer's position: the balances show it at once.
	for id, want := range map[string]float64{"acc-a": 60, "acc-b": 40} {
		res, _ := queryOK(t, p.url, fmt.Sprintf(`{"name":"balance","params":{"id":%q},"minPosition":%q}`, id, pos))
		if res != want {
			t.Fatalf("balance of %s at position %s = %v, want %v", id, pos, res, want)
		}
	}

	// The second leg fails (the destination is not open): compensated.
	send(t, p.url, `{"kind":"transfer","id":"t2","type":"Start","payload":{"from":"acc-a","to":"acc-nobody","amount":25}}`)
	row, pos = transferDone(t, p.url, "t2")
	if row["status"] != "compensated" {
		t.Fatalf("transfer t2 ended %v", row)
	}
	if res, _ := queryOK(t, p.url, fmt.Sprintf(`{"name":"balance","params":{"id":"acc-a"},"minPosition":%q}`, pos)); res != 60.0 {
		t.Fatalf("acc-a after the compensated transfer: %v, want 60", res)
	}

	// The first leg fails (insufficient funds): failed, nothing moved.
	send(t, p.url, `{"kind":"transfer","id":"t3","type":"Start","payload":{"from":"acc-b","to":"acc-a","amount":1000}}`)
	if row, _ = transferDone(t, p.url, "t3"); row["status"] != "failed" {
		t.Fatalf("transfer t3 ended %v", row)
	}
	p.stop(10 * time.Second)
}
