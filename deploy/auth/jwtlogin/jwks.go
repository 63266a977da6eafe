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

// refresh fetches the JWKS unless a fetch is in flight (then it waits for
// that one) and replaces the set on success. With force false it does
// nothing if the last attempt is younger than MinRefresh.
func (v *Verifier) refresh(ctx context.Context, force bool) error {
	v.mu.Lock()
	if ch := v.fetching; ch != nil {
		v.mu.Unlock()
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if !force && v.cfg.Now().Sub(v.lastFetch) < v.cfg.MinRefresh {
		v.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	v.fetching = ch
	v.lastFetch = v.cfg.Now()
	v.mu.Unlock()

	set, err := v.fetch(ctx)
	v.mu.Lock()
	if err == nil {
		v.set = set
	}
	v.fetching = nil
	v.mu.Unlock()
	close(ch)
	return err
}

// refreshForUnknown is the rate-limited refresh a token with an unknown
// key id causes; a failure is logged and the old set kept.
func (v *Verifier) refreshForUnknown(ctx context.Context) {
	if err := v.refresh(ctx, false); err != nil {
		v.log.Warn("jwt login: JWKS refresh for an unknown key id failed; keeping the known keys", "err", err)
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
			fctx, cancel := context.WithTimeout(ctx, DefaultFetchTimeout)
			if err := v.refresh(fctx, true); err != nil && ctx.Err() == nil {
				v.log.Warn("jwt login: JWKS refresh failed; keeping the known keys", "err", err)
			}
			cancel()
		}
	}
}
