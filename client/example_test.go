package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/herald-push/herald/client"
)

// A client that subscribes to a topic, prints what it receives and
// acknowledges it.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	c, err := client.New(client.Config{
		URLs:    []string{"wss://push.example.com/ws", "tls://push.example.com:7443"},
		Token:   "token-from-your-backend",
		Device:  "laptop-1",
		Topics:  []string{"news"},
		AutoAck: true,
		OnState: func(s client.State, err error) { log.Printf("herald: %s %v", s, err) },
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Connect(ctx); err != nil {
		log.Fatal(err) // a refused token is not retried
	}
	defer c.Close()

	if err := c.Subscribe(ctx, "prices"); err != nil {
		log.Print(err) // for example *protocol.Error with CodeForbidden
	}
	for m := range c.Messages() {
		fmt.Printf("%s #%d: %s\n", m.Stream, m.Seq, m.Payload)
	}
	log.Print("stopped: ", c.Err())
}

// The low-level Conn, as tests and load generators use it.
func ExampleConn() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	conn, err := client.DialConn(ctx, "tcp://127.0.0.1:7000", client.DialOptions{LocalAddr: "127.0.0.2"})
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	connected, err := conn.Handshake(ctx, "token", "bot-1", nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("session", connected.Session, "heartbeat", connected.Heartbeat)
	for {
		f, err := conn.ReadFrame()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(f.Type, f.Stream, f.Seq)
	}
}
