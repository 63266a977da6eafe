package jwtlogin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// fetch downloads and decodes the JWKS. Private keys in the set are
// reduced to their public halves; symmetric keys are dropped.
func (v *Verifier) fetch(ctx context.Context) ([]jose.JSONWebKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.cfg.JWKSURL, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS %s: %w", v.cfg.JWKSURL, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS %s: %w", v.cfg.JWKSURL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch JWKS %s: %s", v.cfg.JWKSURL, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS %s: %w", v.cfg.JWKSURL, err)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("fetch JWKS %s: larger than %d bytes", v.cfg.JWKSURL, maxJWKSBytes)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("decode JWKS %s: %w", v.cfg.JWKSURL, err)
	}
	var out []jose.JSONWebKey
	for _, k := range set.Keys {
		if _, symmetric := k.Key.([]byte); symmetric || !k.Valid() {
			continue
		}
		if !k.IsPublic() {
			k = k.Public()
		}
		out = append(out, k)
	}
	return out, nil
}

// fetchCall is one JWKS fetch in flight; done is closed when it ends.
type fetchCall struct {
	done chan struct{}
}

// refresh makes sure a JWKS fetch is running (one starts unless one is in
// flight; with force false, only if nextFetch has come) and waits for it
// to end or for ctx, whichever is first. The fetch runs on the Verifier's
// own context with its own timeout (runFetch), not on ctx: a caller that
// goes away does not abort it, so it cannot burn the rate limit with a
// fetch that never completes.
func (v *Verifier) refresh(ctx context.Context, force bool) {
	v.mu.Lock()
	call := v.fetching
	if call == nil {
		now := v.cfg.Now()
		if v.closed || !force && now.Before(v.nextFetch) {
			v.mu.Unlock()
			return
		}
		call = &fetchCall{done: make(chan struct{})}
		v.fetching = call
		v.nextFetch = now.Add(v.cfg.MinRefresh)
		v.wg.Add(1)
		go v.runFetch(call, now)
	}
	v.mu.Unlock()
	select {
	case <-call.done:
	case <-ctx.Done():
	}
}

// runFetch fetches the JWKS for call, started at started, bounded by
// DefaultFetchTimeout and Close. On success the set is replaced; on
// failure the old set is kept, the failure logged, and an unknown key id
// may cause the next fetch FailedRefreshRetry after this one started
// (MinRefresh if that is shorter) instead of MinRefresh.
func (v *Verifier) runFetch(call *fetchCall, started time.Time) {
	defer v.wg.Done()
	ctx, cancel := context.WithTimeout(v.life, DefaultFetchTimeout)
	defer cancel()
	set, err := v.fetch(ctx)
	v.mu.Lock()
	if err == nil {
		v.set = set
	} else {
		v.nextFetch = started.Add(min(v.cfg.MinRefresh, FailedRefreshRetry))
	}
	v.fetching = nil
	v.mu.Unlock()
	close(call.done)
	if err != nil && v.life.Err() == nil {
		v.log.Warn("jwt login: JWKS refresh failed; keeping the known keys", "err", err)
	}
}

// refreshLoop fetches the JWKS every Refresh until ctx is cancelled.
func (v *Verifier) refreshLoop(ctx context.Context) {
	defer v.wg.Done()
	t := time.NewTicker(v.cfg.Refresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			v.refresh(ctx, true)
		}
	}
}
