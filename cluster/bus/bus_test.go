package bus

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPublishSubscribeInProcessAndTCP(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"tcp", Config{Port: RandomPort}},
		{"in-process only", Config{NoListen: true}},
		{"jetstream", Config{Port: RandomPort, StoreDir: t.TempDir()}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := New(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := b.Start(ctx); err != nil {
				t.Fatal(err)
			}
			defer b.Close()

			sub := b.Conn()
			if tt.cfg.NoListen {
				if b.ClientURL() != "" {
					t.Fatalf("ClientURL = %q with NoListen", b.ClientURL())
				}
			} else {
				nc, err := nats.Connect(b.ClientURL())
				if err != nil {
					t.Fatal(err)
				}
				defer nc.Close()
				sub = nc
			}
			s, err := sub.SubscribeSync("t.>")
			if err != nil {
				t.Fatal(err)
			}
			if err := sub.Flush(); err != nil {
				t.Fatal(err)
			}
			if err := b.Conn().Publish("t.a", []byte("hello")); err != nil {
				t.Fatal(err)
			}
			msg, err := s.NextMsg(5 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if string(msg.Data) != "hello" || msg.Subject != "t.a" {
				t.Fatalf("got %q on %q", msg.Data, msg.Subject)
			}
			if tt.cfg.StoreDir != "" {
				js, err := b.Conn().JetStream()
				if err != nil {
					t.Fatal(err)
				}
				if _, err := js.AccountInfo(); err != nil {
					t.Fatalf("jetstream: %v", err)
				}
			}
			if err := b.Shutdown(ctx); err != nil {
				t.Fatal(err)
			}
			if err := b.Start(ctx); err != ErrClosed {
				t.Fatalf("Start after Close = %v, want ErrClosed", err)
			}
		})
	}
}

func TestTokenAndMonitoring(t *testing.T) {
	b, err := New(Config{Port: RandomPort, Token: "s3cret", MonitorPort: RandomPort})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := nats.Connect(b.ClientURL(), nats.Timeout(2*time.Second)); err == nil {
		t.Fatal("connected without the token")
	}
	nc, err := nats.Connect(b.ClientURL(), nats.Token("s3cret"))
	if err != nil {
		t.Fatalf("with the token: %v", err)
	}
	nc.Close()
	resp, err := http.Get(b.MonitorURL() + "/varz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/varz: %d", resp.StatusCode)
	}
}

func TestNkeys(t *testing.T) {
	user, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := user.PublicKey()
	seed, _ := user.Seed()
	b, err := New(Config{Port: RandomPort, Nkeys: []string{pub}})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Conn().Publish("in.process", nil); err != nil {
		t.Fatalf("the node's own connection: %v", err)
	}
	if _, err := nats.Connect(b.ClientURL(), nats.Timeout(2*time.Second)); err == nil {
		t.Fatal("connected without a key")
	}
	other, _ := nkeys.CreateUser()
	opub, _ := other.PublicKey()
	if _, err := nats.Connect(b.ClientURL(), nats.Nkey(opub, other.Sign), nats.Timeout(2*time.Second)); err == nil {
		t.Fatal("connected with a key that is not allowed")
	}
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(b.ClientURL(), nats.Nkey(pub, kp.Sign))
	if err != nil {
		t.Fatalf("with the allowed key: %v", err)
	}
	nc.Close()
}

func TestConfigValidation(t *testing.T) {
	if _, err := New(Config{Port: 70000}); err == nil {
		t.Fatal("port 70000 accepted")
	}
	if _, err := New(Config{Token: "t", Nkeys: []string{"UABC"}}); err == nil {
		t.Fatal("token and nkeys together accepted")
	}
	if _, err := New(Config{Nkeys: []string{"not-a-key"}}); err == nil || !strings.Contains(err.Error(), "not a public user nkey") {
		t.Fatalf("bad nkey: %v", err)
	}
	if _, err := New(Config{MaxPayload: -1}); err == nil {
		t.Fatal("negative max payload accepted")
	}
}
