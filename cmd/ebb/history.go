package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ebbsync/ebb/deploy/embedded"
	"github.com/ebbsync/ebb/deploy/gateway"
)

// runHistory prints one document's conflict records from the server view:
// open and resolved manual conflicts and the states lww and merge
// overwrote. The view lives on the server, so it asks the HTTP gateway.
func runHistory(ctx context.Context, m *Main, args []string) error {
	var c clientFlags
	var base string
	pos, err := parseClient(m, "history", &c, args, func(fs *flag.FlagSet) {
		fs.StringVar(&base, "http", m.env("EBB_HTTP", "http://127.0.0.1:8080"), "the server's HTTP address (env EBB_HTTP)")
	}, "COLLECTION", "ID")
	if err != nil {
		return err
	}
	coll, id := pos[0], pos[1]
	tc, err := embedded.LoadClientTLS(c.conn.tlsCA, c.conn.tlsCert, c.conn.tlsKey)
	if err != nil {
		return usagef("%v", err)
	}
	u := strings.TrimRight(base, "/") + "/v1/" + url.PathEscape(c.tenant) + "/docs/" + url.PathEscape(coll) + "/" + url.PathEscape(id) + "/history"
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return usagef("--http %q: %v", base, err)
	}
	switch {
	case c.conn.token != "":
		req.Header.Set("Authorization", "Bearer "+c.conn.token)
	case c.conn.user != "":
		req.SetBasicAuth(c.conn.user, c.conn.password)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("history %s/%s: server unreachable at %s: %w", coll, id, base, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("history %s/%s: read the answer: %w", coll, id, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		return fmt.Errorf("history %s/%s: %s: %s", coll, id, resp.Status, e.Error)
	}
	var h gateway.HistoryResponse
	if err := json.Unmarshal(body, &h); err != nil {
		return fmt.Errorf("history %s/%s: the server's answer: %w", coll, id, err)
	}
	if c.json {
		return printJSON(m.Stdout, h)
	}
	if len(h.Conflicts) == 0 {
		fmt.Fprintf(m.Stdout, "%s/%s: no conflict records\n", coll, id)
		return nil
	}
	for _, r := range h.Conflicts {
		sides := make([]string, 0, len(r.Sides))
		for _, s := range r.Sides {
			sides = append(sides, sideString(s))
		}
		line := fmt.Sprintf("%s/%s: %s %s (%s): %s", coll, id, r.Status, r.ID, r.Policy, strings.Join(sides, " vs "))
		if len(r.Lost) > 0 {
			line += "; lost " + strings.Join(r.Lost, ",")
		}
		if r.Resolution != "" {
			line += "; resolved by " + r.Resolution
		}
		fmt.Fprintln(m.Stdout, line)
	}
	return nil
}
