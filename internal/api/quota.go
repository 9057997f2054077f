package api

import (
	"fmt"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Limits are an app's quotas on the API. A zero rate is unlimited; a zero
// burst with a rate is the rate.
type Limits struct {
	APIRate, APIBurst         int // requests per second, and at once
	PublishRate, PublishBurst int // messages per second (pushes, publishes, broadcasts; each message of a call counts), and at once
}

// tokenBucket is a token bucket; a nil bucket allows everything.
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64 // tokens per second
	burst  float64
	tokens float64
	last   time.Time
}

func newBucket(rate, burst int, now time.Time) *tokenBucket {
	if rate <= 0 {
		return nil
	}
	if burst <= 0 {
		burst = rate
	}
	return &tokenBucket{rate: float64(rate), burst: float64(burst), tokens: float64(burst), last: now}
}

// take takes n tokens at now. If there are not enough it takes none and
// returns how long until there would be; n over the burst can never pass
// and returns -1.
func (b *tokenBucket) take(n int, now time.Time) time.Duration {
	if b == nil {
		return 0
	}
	want := float64(n)
	if want > b.burst {
		return -1
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(b.burst, b.tokens+el*b.rate)
		b.last = now
	}
	if b.tokens >= want {
		b.tokens -= want
		return 0
	}
	return time.Duration((want - b.tokens) / b.rate * float64(time.Second))
}

// appQuota is one app's buckets and counters.
type appQuota struct {
	api, publish           *tokenBucket
	apiLimited, pubLimited atomic.Uint64
	apiLogged              atomic.Int64 // unix ms of the last log line
	limits                 Limits
}

// RateLimited counts an app's requests refused with 429.
type RateLimited struct {
	API     uint64 // over api_rate
	Publish uint64 // over publish_rate
}

// SetLimits sets the apps' quotas (by app id; an app without an entry is
// unlimited), as at start or after a reload. An app whose limits did not
// change keeps its buckets and counters.
func (a *API) SetLimits(limits map[string]Limits) {
	old := a.quotas.Load()
	m := make(map[string]*appQuota, len(limits))
	now := time.Now()
	for id, l := range limits {
		if old != nil {
			if q := (*old)[id]; q != nil && q.limits == l {
				m[id] = q
				continue
			}
		}
		m[id] = &appQuota{limits: l, api: newBucket(l.APIRate, l.APIBurst, now), publish: newBucket(l.PublishRate, l.PublishBurst, now)}
	}
	a.quotas.Store(&m)
}

// quota returns app's quota, or nil.
func (a *API) quota(app string) *appQuota {
	if m := a.quotas.Load(); m != nil {
		return (*m)[app]
	}
	return nil
}

// RateLimited returns the 429s answered per app, for every configured app.
func (a *API) RateLimited() map[string]RateLimited {
	m := *a.quotas.Load()
	out := make(map[string]RateLimited, len(m))
	for app, q := range m {
		out[app] = RateLimited{API: q.apiLimited.Load(), Publish: q.pubLimited.Load()}
	}
	return out
}

// retryAfter renders a wait as Retry-After seconds, rounded up, at least 1.
func retryAfter(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// allowRequest counts one request of app against its api_rate.
func (a *API) allowRequest(app string) error {
	q := a.quota(app)
	if q == nil || q.api == nil {
		return nil
	}
	wait := q.api.take(1, time.Now())
	if wait == 0 {
		return nil
	}
	q.apiLimited.Add(1)
	a.logLimited(app, q, "api_rate")
	return &httpError{status: http.StatusTooManyRequests, code: "rate_limited", retryAfter: retryAfter(wait),
		msg: fmt.Sprintf("app %q is over its API rate (%d requests per second, %d at once); retry after Retry-After seconds", app, q.limits.APIRate, q.api.burstInt())}
}

// allowPublish counts n messages of app against its publish_rate.
func (a *API) allowPublish(app string, n int) error {
	q := a.quota(app)
	if q == nil || q.publish == nil {
		return nil
	}
	wait := q.publish.take(n, time.Now())
	if wait == 0 {
		return nil
	}
	q.pubLimited.Add(1)
	a.logLimited(app, q, "publish_rate")
	if wait < 0 {
		return &httpError{status: http.StatusRequestEntityTooLarge, code: "over_publish_burst",
			msg: fmt.Sprintf("%d messages in one call; app %q may send at most %d at once (publish_burst): split the call", n, app, q.publish.burstInt())}
	}
	return &httpError{status: http.StatusTooManyRequests, code: "publish_rate_limited", retryAfter: retryAfter(wait),
		msg: fmt.Sprintf("app %q is over its publish rate (%d messages per second, %d at once); retry after Retry-After seconds", app, q.limits.PublishRate, q.publish.burstInt())}
}

func (b *tokenBucket) burstInt() int { return int(b.burst) }

// logLimited logs that app is rate limited, at most once a second per app.
func (a *API) logLimited(app string, q *appQuota, limit string) {
	now := time.Now().UnixMilli()
	if last := q.apiLogged.Load(); now-last >= 1000 && q.apiLogged.CompareAndSwap(last, now) {
		a.log.Warn("api rate limited", "app", app, "limit", limit, "api_refused_total", q.apiLimited.Load(), "publish_refused_total", q.pubLimited.Load())
	}
}
