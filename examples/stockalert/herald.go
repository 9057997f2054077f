package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// Herald is the backend's side of Herald: it mints client tokens with the
// app's secret and calls the server API with the app's API key, like any
// app backend would.
type Herald struct {
	API    string // base URL of the server API, e.g. http://127.0.0.1:8081
	WS     string // WebSocket URL clients connect to, e.g. ws://127.0.0.1:8080/ws
	App    string
	Secret []byte
	Key    string
	HTTP   *http.Client
}

// Token mints an HS256 client token for user, allowed topics, valid for
// ttl: the claims of docs/protocol.md (sub, app, iat, exp, topics).
func (h *Herald) Token(user string, topics []string, ttl time.Duration) (string, error) {
	if len(h.Secret) < 16 {
		return "", errors.New("token: the app secret must be at least 16 bytes")
	}
	now := time.Now()
	claims, err := json.Marshal(struct {
		Sub    string   `json:"sub"`
		App    string   `json:"app"`
		Iat    int64    `json:"iat"`
		Exp    int64    `json:"exp"`
		Topics []string `json:"topics,omitempty"`
	}{user, h.App, now.Unix(), now.Add(ttl).Unix(), topics})
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	enc := base64.RawURLEncoding
	body := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + enc.EncodeToString(claims)
	mac := hmac.New(sha256.New, h.Secret)
	mac.Write([]byte(body))
	return body + "." + enc.EncodeToString(mac.Sum(nil)), nil
}

// OutMessage is one message of a bulk push: Data goes to User's inbox
// under the id ID (ours, so that a retry is stored once).
type OutMessage struct {
	User string          `json:"user"`
	ID   string          `json:"id"`
	Data json.RawMessage `json:"data"`
}

// PushResult is Herald's answer for one message of a push.
type PushResult struct {
	User        string `json:"user"`
	ID          string `json:"id"`
	Seq         uint64 `json:"seq"`
	Duplicate   bool   `json:"duplicate"`
	Connections int    `json:"connections"`
}

// APIError is an error answer of the server API.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("herald api: %d %s: %s", e.Status, e.Code, e.Message)
}

// retryable reports whether a failed call may succeed if sent again with
// the same ids: network errors and 5xx (docs/api.md, "Errors").
func retryable(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status >= 500
	}
	return !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// Push sends msgs to their users' inboxes: one push to a user when there
// is one message, a bulk push otherwise. The caller keeps each call within
// max_recipients (10,000) messages. A call that fails with a network error
// or a 5xx is retried with the same ids, at most three times in all.
func (h *Herald) Push(ctx context.Context, msgs []OutMessage) ([]PushResult, error) {
	if len(msgs) == 0 {
		return nil, nil
	}
	var err error
	for attempt := range 3 {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("push: %w (after %v)", ctx.Err(), err)
			case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
			}
		}
		var res []PushResult
		if res, err = h.pushOnce(ctx, msgs); err == nil {
			return res, nil
		}
		if !retryable(err) {
			break
		}
	}
	return nil, err
}

func (h *Herald) pushOnce(ctx context.Context, msgs []OutMessage) ([]PushResult, error) {
	if len(msgs) == 1 {
		m := msgs[0]
		var r PushResult
		path := "/v1/apps/" + url.PathEscape(h.App) + "/users/" + url.PathEscape(m.User) + "/messages"
		if err := h.call(ctx, path, map[string]any{"id": m.ID, "data": m.Data}, &r); err != nil {
			return nil, fmt.Errorf("push to %s: %w", m.User, err)
		}
		r.User = m.User
		return []PushResult{r}, nil
	}
	var out struct {
		Results []PushResult `json:"results"`
	}
	if err := h.call(ctx, "/v1/apps/"+url.PathEscape(h.App)+"/push", map[string]any{"messages": msgs}, &out); err != nil {
		return nil, fmt.Errorf("bulk push of %d: %w", len(msgs), err)
	}
	return out.Results, nil
}

// Publish sends data to the subscribers of topic.
func (h *Herald) Publish(ctx context.Context, topic string, data any) error {
	path := "/v1/apps/" + url.PathEscape(h.App) + "/topics/" + url.PathEscape(topic) + "/messages"
	if err := h.call(ctx, path, map[string]any{"data": data}, nil); err != nil {
		return fmt.Errorf("publish to %s: %w", topic, err)
	}
	return nil
}

// call POSTs body as JSON to path and decodes the answer into out.
func (h *Herald) call(ctx context.Context, path string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.API+path, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+h.Key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		_ = json.Unmarshal(raw, &e)
		return &APIError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	return nil
}
