package skyisland

// These tests run against a real server, started by Sky Island's test suite
// (crates/skyisland/tests/clients.rs), which passes its address and fixtures in
// SKYISLAND_TEST_* variables.

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

func env(t *testing.T, name string) string {
	t.Helper()
	v := os.Getenv("SKYISLAND_TEST_" + name)
	if v == "" {
		t.Fatalf("SKYISLAND_TEST_%s is not set: run these tests through cargo test --test clients", name)
	}
	return v
}

func client(t *testing.T) *Client {
	port, err := strconv.Atoi(env(t, "PORT"))
	if err != nil {
		t.Fatal(err)
	}
	return NewClient(env(t, "HOST"), port, 60*time.Second)
}

func TestTheOriginalShape(t *testing.T) {
	res, err := client(t).Function(env(t, "GEO"), "Encode(57.64911, 10.40744)")
	if err != nil {
		t.Fatal(err)
	}
	if res.Data != "57.6491|10.4074" || res.Timestamp < 1700000000 {
		t.Fatalf("%+v", res)
	}
}

func TestOptionalFields(t *testing.T) {
	c := client(t)
	ctx := context.Background()
	answer, err := c.FunctionWith(ctx, Request{URL: env(t, "GEO"), Call: "Encode(1, 2)", Version: env(t, "GEO_TAG")})
	if err != nil {
		t.Fatal(err)
	}
	if answer.Data != "1.0000|2.0000" || answer.Commit != env(t, "GEO_COMMIT") {
		t.Fatalf("%+v", answer)
	}
	no := false
	answer, err = c.FunctionWith(ctx, Request{URL: env(t, "MISC"), Call: "Hello()", Cache: &no, CacheBust: true})
	if err != nil || answer.Data != "hello" || answer.Cache != "miss" {
		t.Fatalf("%+v %v", answer, err)
	}
	for _, runtime := range []string{"python", "node"} {
		answer, err = c.FunctionWith(ctx, Request{URL: env(t, "BILINGUAL"), Call: "which(1)", Runtime: runtime})
		if err != nil || answer.Data != runtime+" 1" {
			t.Fatalf("%+v %v", answer, err)
		}
	}
	answer, err = c.FunctionWith(ctx, Request{URL: env(t, "NET"), Call: "Addr(0)", IP4: true})
	if err != nil || !strings.HasPrefix(answer.Data, env(t, "IP4_PREFIX")) {
		t.Fatalf("%+v %v", answer, err)
	}
}

func TestBuildFailure(t *testing.T) {
	_, err := client(t).Function(env(t, "BROKEN"), "Oops()")
	e, ok := err.(*Error)
	if !ok || e.Status != 422 || e.Message != "build failed" || e.Body["output"] == nil {
		t.Fatalf("%#v", err)
	}
}

func TestTimeout(t *testing.T) {
	_, err := client(t).Function(env(t, "MISC"), "Sleep(10000)")
	if !IsStatus(err, 504) || !strings.Contains(err.Error(), "ran longer than") {
		t.Fatalf("%v", err)
	}
}

func TestQuotesAndBackslashes(t *testing.T) {
	res, err := client(t).Function(env(t, "GEO"), `Quote("a \"b\" \\ c")`)
	if err != nil {
		t.Fatal(err)
	}
	if res.Data != `"a \"b\" \\ c"` {
		t.Fatalf("%q", res.Data)
	}
}

func TestAdmin(t *testing.T) {
	c := client(t)
	ctx := context.Background()
	if _, err := c.Jails(ctx); !IsStatus(err, 403) {
		t.Fatalf("without the token: %v", err)
	}
	c.AdminToken = "wrong-token"
	if _, err := c.APIStats(ctx); !IsStatus(err, 403) {
		t.Fatalf("with a wrong token: %v", err)
	}
	c.AdminToken = env(t, "ADMIN_TOKEN")
	if _, err := c.Jails(ctx); err != nil {
		t.Fatal(err)
	}
	stats, err := c.APIStats(ctx)
	if err != nil || stats["uptime_seconds"] == nil {
		t.Fatalf("%v %v", stats, err)
	}
	ips, err := c.IPs(ctx, "available")
	if count, ok := ips["count"].(float64); err != nil || !ok || count < 1 {
		t.Fatalf("%v %v", ips, err)
	}
	if err := c.KillJail(ctx, "no-such-jail"); !IsStatus(err, 404) {
		t.Fatalf("%v", err)
	}
}

func TestAPIKeys(t *testing.T) {
	port, err := strconv.Atoi(env(t, "KEYED_PORT"))
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(env(t, "HOST"), port, 60*time.Second)
	_, err = c.Function(env(t, "MISC"), "Hello()")
	var refused *Error
	if !errors.As(err, &refused) || refused.Status != 401 {
		t.Fatalf("without a key: %v", err)
	}
	c.APIKey = env(t, "API_KEY")
	res, err := c.Function(env(t, "MISC"), "Hello()")
	if err != nil || res.Data != "hello" {
		t.Fatalf("with the key: %+v %v", res, err)
	}
}

func TestAsyncCallsAndSchedules(t *testing.T) {
	c := client(t)
	c.AdminToken = env(t, "ADMIN_TOKEN")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id, err := c.CallAsync(ctx, Request{URL: env(t, "MISC"), Call: "Hello()"}, AsyncOptions{IdempotencyKey: "go-client"})
	if err != nil || len(id) != 32 {
		t.Fatalf("%q %v", id, err)
	}
	again, err := c.CallAsync(ctx, Request{URL: env(t, "MISC"), Call: "Hello()"}, AsyncOptions{IdempotencyKey: "go-client"})
	if err != nil || again != id {
		t.Fatalf("the same key named %q, not %q: %v", again, id, err)
	}
	inv, err := c.WaitInvocation(ctx, id)
	if err != nil || inv.Status != "succeeded" || inv.Result == nil || inv.Result.Data != "hello" || len(inv.Attempts) != 1 {
		t.Fatalf("%+v %v", inv, err)
	}
	failed, err := c.CallAsync(ctx, Request{URL: env(t, "MISC"), Call: `Panic("go")`}, AsyncOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if inv, err := c.WaitInvocation(ctx, failed); err != nil || inv.Status != "failed" || inv.HTTPStatus != 500 {
		t.Fatalf("%+v %v", inv, err)
	}
	if _, err := c.CallAsync(ctx, Request{URL: env(t, "MISC"), Call: "Hello("}, AsyncOptions{}); !IsStatus(err, 400) {
		t.Fatalf("a bad call: %v", err)
	}
	if _, err := c.Invocation(ctx, strings.Repeat("0", 32)); !IsStatus(err, 404) {
		t.Fatalf("an unknown id: %v", err)
	}
	if _, err := c.AddSchedule(ctx, Schedule{Name: "go-client", URL: env(t, "MISC"), Call: "Hello()", Cron: "0 3 * * *", Timezone: "Europe/Copenhagen"}); err != nil {
		t.Fatal(err)
	}
	if err := c.PauseSchedule(ctx, "go-client", true); err != nil {
		t.Fatal(err)
	}
	if s, err := c.GetSchedule(ctx, "go-client"); err != nil || s["paused"] != true {
		t.Fatalf("%v %v", s, err)
	}
	if err := c.DeleteSchedule(ctx, "go-client"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetSchedule(ctx, "go-client"); !IsStatus(err, 404) {
		t.Fatalf("a deleted schedule: %v", err)
	}
}
