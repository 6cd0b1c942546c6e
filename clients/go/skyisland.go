// Package skyisland is the Go client of Sky Island, a Function-as-a-Service platform that
// runs functions of Go packages from git repositories in fresh jails.
//
// It keeps the original client's shape, so existing callers only change the address:
//
//	client := skyisland.NewClient("http://127.0.0.1", 3280, 10*time.Second)
//	res, err := client.Function("github.com/mmcloughlin/geohash", "Encode(57.64911, 10.40744)")
//
// and adds what a client of a real service needs: the optional request fields
// (FunctionWith), contexts, errors that carry the server's status and message, API keys,
// and the admin endpoints.
package skyisland

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client talks to one Sky Island server. Its fields may be set after NewClient and
// before use; it is safe for concurrent use afterwards.
type Client struct {
	// Endpoint is the server's base URL, e.g. "http://127.0.0.1:3280".
	Endpoint string
	// AdminToken is sent in AdminHeader with admin calls.
	AdminToken  string
	AdminHeader string
	// APIKey, when set, is sent as "Authorization: Bearer KEY" with function calls.
	APIKey string
	HTTP   *http.Client
}

// NewClient makes a client for the server at url (scheme and host, e.g.
// "http://demo.skyisland.io") and port, with a timeout for each request.
func NewClient(url string, port int, timeout time.Duration) *Client {
	// The server closes connections idle for its client_timeout (10s by default): give
	// them up first, rather than send a request on one as it closes.
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.IdleConnTimeout = 4 * time.Second
	return &Client{
		Endpoint:    strings.TrimRight(url, "/") + ":" + strconv.Itoa(port),
		AdminHeader: "X-Sky-Island-Token",
		HTTP:        &http.Client{Timeout: timeout, Transport: transport},
	}
}

// Data is what the original client returned: when the call ran and what it printed.
type Data struct {
	Timestamp int64  `json:"timestamp"`
	Data      string `json:"data"`
}

// Request is a function call with the optional fields.
type Request struct {
	URL       string `json:"url"`
	Call      string `json:"call"`
	Version   string `json:"version,omitempty"`
	CacheBust bool   `json:"cache_bust,omitempty"`
	IP4       bool   `json:"ip4,omitempty"`
	// Runtime is "go", "python", "node" or "lua"; empty: the server detects it.
	Runtime string `json:"runtime,omitempty"`
	// Cache, when not nil, says whether the request cache may answer and store it.
	Cache *bool `json:"cache,omitempty"`
}

// Answer is the server's whole answer to a function call.
type Answer struct {
	Timestamp  int64   `json:"timestamp"`
	Data       string  `json:"data"`
	Commit     string  `json:"commit"`
	Path       string  `json:"path"`
	Built      bool    `json:"built"`
	Cache      string  `json:"cache"`
	CacheTier  string  `json:"cache_tier,omitempty"`
	CachedAtMs int64   `json:"cached_at_ms,omitempty"`
	DurationMs float64 `json:"duration_ms"`
}

// Error is an answer other than 2xx: the status, the server's message, and the whole
// JSON body (which may hold more, e.g. "output" for a build failure or "stderr").
type Error struct {
	Status     int
	Message    string
	Body       map[string]any
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	return fmt.Sprintf("sky island: %d %s: %s", e.Status, http.StatusText(e.Status), e.Message)
}

// IsStatus reports whether err is an *Error with the given status.
func IsStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == status
}

// Function calls a function, as the original client did.
func (c *Client) Function(url, call string) (*Data, error) {
	return c.FunctionContext(context.Background(), url, call)
}

// FunctionContext is Function with a context.
func (c *Client) FunctionContext(ctx context.Context, url, call string) (*Data, error) {
	answer, err := c.FunctionWith(ctx, Request{URL: url, Call: call})
	if err != nil {
		return nil, err
	}
	return &Data{Timestamp: answer.Timestamp, Data: answer.Data}, nil
}

// FunctionWith calls a function with the optional fields and returns the whole answer.
func (c *Client) FunctionWith(ctx context.Context, r Request) (*Answer, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return nil, err
	}
	var answer Answer
	header := http.Header{"Content-Type": {"application/json"}}
	if c.APIKey != "" {
		header.Set("Authorization", "Bearer "+c.APIKey)
	}
	if err := c.do(ctx, http.MethodPost, "/api/v1/function", header, body, &answer); err != nil {
		return nil, err
	}
	return &answer, nil
}

// AsyncOptions are the optional fields of an asynchronous call.
type AsyncOptions struct {
	// CallbackURL, when set, is where the server POSTs the finished invocation; it must
	// be under one of the server's [async] callback_allow prefixes.
	CallbackURL string `json:"callback_url,omitempty"`
	// IdempotencyKey: the same key names the same invocation.
	IdempotencyKey string `json:"idempotency_key,omitempty"`
}

// Invocation is an asynchronous call as the server keeps it.
type Invocation struct {
	ID         string           `json:"id"`
	Status     string           `json:"status"` // queued, running, succeeded, failed
	Request    map[string]any   `json:"request"`
	CreatedAt  string           `json:"created_at"`
	StartedAt  string           `json:"started_at,omitempty"`
	FinishedAt string           `json:"finished_at,omitempty"`
	Attempts   []map[string]any `json:"attempts"`
	// HTTPStatus, Result and Error are set once it has finished: Result is the answer a
	// synchronous call gets, Error the error body it would have been answered with.
	HTTPStatus int            `json:"http_status,omitempty"`
	Result     *Answer        `json:"result,omitempty"`
	Error      map[string]any `json:"error,omitempty"`
	Schedule   string         `json:"schedule,omitempty"`
	Callback   map[string]any `json:"callback,omitempty"`
}

// Finished reports whether the invocation has ended.
func (i *Invocation) Finished() bool { return i.Status == "succeeded" || i.Status == "failed" }

// CallAsync submits a call to run in the background and returns its id at once.
func (c *Client) CallAsync(ctx context.Context, r Request, opts AsyncOptions) (string, error) {
	fields := map[string]any{}
	for _, part := range []any{r, opts} {
		data, err := json.Marshal(part)
		if err != nil {
			return "", err
		}
		if err := json.Unmarshal(data, &fields); err != nil {
			return "", err
		}
	}
	fields["async"] = true
	body, err := json.Marshal(fields)
	if err != nil {
		return "", err
	}
	var out struct {
		ID string `json:"id"`
	}
	if err := c.do(ctx, http.MethodPost, "/api/v1/function", c.keyHeader(), body, &out); err != nil {
		return "", err
	}
	return out.ID, nil
}

// Invocation looks an invocation up.
func (c *Client) Invocation(ctx context.Context, id string) (*Invocation, error) {
	var out Invocation
	if err := c.do(ctx, http.MethodGet, "/api/v1/invocations/"+url.PathEscape(id), c.keyHeader(), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// WaitInvocation polls until the invocation has finished or ctx is done.
func (c *Client) WaitInvocation(ctx context.Context, id string) (*Invocation, error) {
	pause := 50 * time.Millisecond
	for {
		inv, err := c.Invocation(ctx, id)
		if err != nil || inv.Finished() {
			return inv, err
		}
		select {
		case <-ctx.Done():
			return inv, ctx.Err()
		case <-time.After(pause):
		}
		if pause *= 2; pause > time.Second {
			pause = time.Second
		}
	}
}

// Schedule is a call the server makes on a schedule: Cron (with Timezone) or Every.
type Schedule struct {
	Name     string `json:"name"`
	URL      string `json:"url"`
	Call     string `json:"call"`
	Cron     string `json:"cron,omitempty"`
	Every    string `json:"every,omitempty"`
	Timezone string `json:"timezone,omitempty"`
	Version  string `json:"version,omitempty"`
	Runtime  string `json:"runtime,omitempty"`
	CatchUp  bool   `json:"catch_up,omitempty"`
	Paused   bool   `json:"paused,omitempty"`
	Cache    *bool  `json:"cache,omitempty"`
}

// AddSchedule adds a schedule (admin).
func (c *Client) AddSchedule(ctx context.Context, s Schedule) (map[string]any, error) {
	body, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	err = c.admin(ctx, http.MethodPost, "/api/v1/schedules", body, &out)
	return out, err
}

// Schedules lists the schedules (admin).
func (c *Client) Schedules(ctx context.Context) ([]map[string]any, error) {
	var out struct {
		Items []map[string]any `json:"items"`
	}
	err := c.admin(ctx, http.MethodGet, "/api/v1/schedules", nil, &out)
	return out.Items, err
}

// GetSchedule returns a schedule with its last runs (admin).
func (c *Client) GetSchedule(ctx context.Context, name string) (map[string]any, error) {
	var out map[string]any
	err := c.admin(ctx, http.MethodGet, "/api/v1/schedules/"+url.PathEscape(name), nil, &out)
	return out, err
}

// PauseSchedule pauses (or, with false, resumes) a schedule (admin).
func (c *Client) PauseSchedule(ctx context.Context, name string, paused bool) error {
	body, _ := json.Marshal(map[string]bool{"paused": paused})
	return c.admin(ctx, http.MethodPut, "/api/v1/schedules/"+url.PathEscape(name), body, nil)
}

// DeleteSchedule deletes a schedule (admin).
func (c *Client) DeleteSchedule(ctx context.Context, name string) error {
	return c.admin(ctx, http.MethodDelete, "/api/v1/schedules/"+url.PathEscape(name), nil, nil)
}

func (c *Client) keyHeader() http.Header {
	header := http.Header{"Content-Type": {"application/json"}}
	if c.APIKey != "" {
		header.Set("Authorization", "Bearer "+c.APIKey)
	}
	return header
}

// Jails lists the running jails (admin).
func (c *Client) Jails(ctx context.Context) ([]map[string]any, error) {
	var out struct {
		Jails []map[string]any `json:"jails"`
	}
	if err := c.admin(ctx, http.MethodGet, "/api/v1/admin/jails", nil, &out); err != nil {
		return nil, err
	}
	return out.Jails, nil
}

// Jail describes one running jail (admin).
func (c *Client) Jail(ctx context.Context, id string) (map[string]any, error) {
	var out map[string]any
	err := c.admin(ctx, http.MethodGet, "/api/v1/admin/jail/"+url.PathEscape(id), nil, &out)
	return out, err
}

// KillJail kills one jail and returns once it is gone (admin).
func (c *Client) KillJail(ctx context.Context, id string) error {
	return c.admin(ctx, http.MethodDelete, "/api/v1/admin/jail/"+url.PathEscape(id), nil, nil)
}

// KillJails kills every jail (admin).
func (c *Client) KillJails(ctx context.Context) error {
	return c.admin(ctx, http.MethodDelete, "/api/v1/admin/jails", nil, nil)
}

// IPs lists the IPv4 pool; state is "", "available" or "unavailable" (admin).
func (c *Client) IPs(ctx context.Context, state string) (map[string]any, error) {
	path := "/api/v1/admin/ips"
	if state != "" {
		path += "?state=" + url.QueryEscape(state)
	}
	var out map[string]any
	err := c.admin(ctx, http.MethodGet, path, nil, &out)
	return out, err
}

// SetIP sets one pool address's state, "available" or "unavailable" (admin).
func (c *Client) SetIP(ctx context.Context, ip, state string) error {
	body, _ := json.Marshal(map[string]string{"ip": ip, "state": state})
	return c.admin(ctx, http.MethodPut, "/api/v1/admin/ips", body, nil)
}

// APIStats returns the server's API statistics (admin).
func (c *Client) APIStats(ctx context.Context) (map[string]any, error) {
	var out map[string]any
	err := c.admin(ctx, http.MethodGet, "/api/v1/admin/api-stats", nil, &out)
	return out, err
}

func (c *Client) admin(ctx context.Context, method, path string, body []byte, out any) error {
	header := http.Header{"Content-Type": {"application/json"}}
	if c.AdminToken != "" {
		header.Set(c.AdminHeader, c.AdminToken)
	}
	return c.do(ctx, method, path, header, body, out)
}

func (c *Client) do(ctx context.Context, method, path string, header http.Header, body []byte, out any) error {
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Endpoint+path, reader)
	if err != nil {
		return err
	}
	req.Header = header
	client := c.HTTP
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := &Error{Status: resp.StatusCode, Message: strings.TrimSpace(string(data))}
		if json.Unmarshal(data, &e.Body) == nil {
			if m, ok := e.Body["error"].(string); ok {
				e.Message = m
			}
		}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
			e.RetryAfter = time.Duration(s) * time.Second
		}
		return e
	}
	if out == nil || len(data) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("sky island: unreadable answer: %w", err)
	}
	return nil
}
