package broker_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/herald-push/herald/internal/broker"
	"github.com/herald-push/herald/internal/broker/brokertest"
	"github.com/herald-push/herald/internal/testsvc"
)

// natsNode connects node i of a test cluster under prefix to url.
func natsNode(t testing.TB, url, prefix string, i int, o broker.Options) *broker.NATS {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := broker.NewNATS(ctx, broker.NATSOptions{
		URL:           url,
		Prefix:        prefix,
		Node:          fmt.Sprint("node", i),
		Options:       o,
		Logger:        slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		CheckInterval: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatalf("NewNATS: %v", err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

func natsCluster(t testing.TB, url string, opts []broker.Options) []broker.Broker {
	prefix := testsvc.Prefix(t)
	var bs []broker.Broker
	for i, o := range opts {
		bs = append(bs, natsNode(t, url, prefix, i, o))
	}
	return bs
}

func TestNATSConformance(t *testing.T) {
	url := "nats://" + testsvc.NATS(t)
	brokertest.Run(t, brokertest.Config{
		NewCluster: func(t *testing.T, opts []broker.Options) []broker.Broker {
			return natsCluster(t, url, opts)
		},
		NewOutageCluster: func(t *testing.T, opts []broker.Options) ([]broker.Broker, func(bool)) {
			srv := testsvc.StartNATS(t)
			return natsCluster(t, srv.URL(), opts), func(down bool) {
				if down {
					srv.Stop()
				} else {
					srv.Start()
				}
			}
		},
	})
}

// TestNATSKilled: a server killed (not stopped) and started again is an
// outage like the others; Publish never blocks meanwhile.
func TestNATSKilled(t *testing.T) {
	srv := testsvc.StartNATS(t)
	resynced := make(chan broker.Resync, 10)
	a := natsNode(t, srv.URL(), "k", 0, broker.Options{})
	b := natsNode(t, srv.URL(), "k", 1, broker.Options{OnResync: func(r broker.Resync) { resynced <- r }})
	s := broker.UserSubject("app", "u")
	got := make(chan string, 10)
	if _, err := b.Subscribe(t.Context(), s, func(d []byte) { got <- string(d) }); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	waitFor(t, "Publish fails with ErrUnavailable", func() error {
		start := time.Now()
		err := a.Publish(t.Context(), s, []byte("x"))
		if d := time.Since(start); d > time.Second {
			t.Fatalf("Publish took %v", d)
		}
		if !errors.Is(err, broker.ErrUnavailable) {
			return fmt.Errorf("Publish = %v", err)
		}
		return nil
	})
	waitFor(t, "b unhealthy", func() error {
		if b.Health() == nil {
			return errors.New("Health nil with the server killed")
		}
		return nil
	})
	srv.Start()
	waitFor(t, "a healthy", a.Health)
	waitFor(t, "b healthy", b.Health)
	select {
	case r := <-resynced:
		if r.Subjects != nil {
			t.Fatalf("OnResync(%+v), want nil Subjects", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no OnResync")
	}
	if err := a.Publish(t.Context(), s, []byte("after")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m != "after" {
			t.Fatalf("got %q", m)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nothing after the restart")
	}
	if st := b.Stats(); st.Reconnects == 0 || st.Resyncs == 0 {
		t.Fatalf("Stats %+v", st)
	}
}

// TestNATSNoServer: NewNATS fails with ErrUnavailable when nothing
// listens.
func TestNATSNoServer(t *testing.T) {
	srv := testsvc.StartNATS(t)
	url := srv.URL()
	srv.Stop()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := broker.NewNATS(ctx, broker.NATSOptions{URL: url, Node: "x"})
	if !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("NewNATS = %v, want ErrUnavailable", err)
	}
}

func waitFor(t testing.TB, what string, f func() error) {
	t.Helper()
	testsvc.WaitFor(t, 10*time.Second, what, f)
}
