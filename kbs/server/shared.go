package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coffer-dev/coffer/kbs/protocol"
	"github.com/coffer-dev/coffer/kbs/store"
	"github.com/coffer-dev/coffer/spec"
)

// The broker keeps challenges, attested sessions, admin token ids,
// policies and reference values in one store.State, whatever the store:
// the postgres store's own, so every replica over it can continue any
// client's handshake and follows changes made through any replica
// (store.Watch), or a store.Local in this process for the fs and memory
// stores. Attested sessions are also cached in the broker's memory; a
// miss reads the session's token from the state and verifies it (every
// replica must share the token key).

// initial remembers the policies the broker started with, which hold
// until an admin sets others in the shared store.
type initial struct {
	resource      string
	attestationID string
	attestation   string
}

// poolStatser is a store with a connection pool (postgres).
type poolStatser interface {
	PoolStats() (acquired, idle, max int32)
}

// registerStoreMetrics exports the shared store's pool and settings version.
func (s *Server) registerStoreMetrics() {
	if ps, ok := s.o.store.(poolStatser); ok {
		for _, g := range []struct {
			name, help string
			f          func() float64
		}{
			{"kbs_store_connections_in_use", "Database connections in use.", func() float64 { a, _, _ := ps.PoolStats(); return float64(a) }},
			{"kbs_store_connections_idle", "Idle database connections in the pool.", func() float64 { _, i, _ := ps.PoolStats(); return float64(i) }},
			{"kbs_store_connections_max", "Bound of the database connection pool.", func() float64 { _, _, m := ps.PoolStats(); return float64(m) }},
		} {
			s.m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: g.name, Help: g.help}, g.f))
		}
	}
	s.m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "kbs_settings_version", Help: "Version of the shared policies and reference values this replica applied.",
	}, func() float64 { return float64(s.settingsVersion.Load()) }))
}

func (s *Server) startShared(ctx context.Context) error {
	defer s.registerStoreMetrics()
	st := s.state
	s.init.resource = s.o.engine.ResourcePolicy()
	s.init.attestationID, s.init.attestation = s.o.engine.AttestationPolicy()
	cur, err := st.LoadSettings(ctx)
	if err != nil {
		return fmt.Errorf("kbs server: loading shared policies: %w", err)
	}
	if err := s.applySettings(ctx, cur, true); err != nil {
		return fmt.Errorf("kbs server: shared policies: %w", err)
	}
	s.kick = make(chan struct{}, 1)
	bg := s.bg
	st.Watch(bg, s.changed)
	go func() {
		for {
			select {
			case <-bg.Done():
				return
			case <-s.kick:
			}
			for bg.Err() == nil {
				force := s.force.Swap(false)
				cur, err := st.LoadSettings(bg)
				if err == nil {
					err = s.applySettings(bg, cur, force)
				}
				if err != nil && force {
					s.force.Store(true)
				}
				if err == nil {
					break
				}
				s.o.logger.Error("kbs shared policies not reloaded: retrying", "err", err)
				select {
				case <-bg.Done():
				case <-time.After(time.Second):
				}
			}
		}
	}()
	s.startJanitor()
	return nil
}

// resync asks the background loop to reload the shared settings and
// install every one that differs from the engine (after an admin change
// the engine took but the store did not: back to what the store holds).
func (s *Server) resync() {
	s.force.Store(true)
	s.changed()
}

// changed asks the background loop to install what changed in the store.
func (s *Server) changed() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// applySettings installs the settings that changed in the store since it
// last ran (all, when force) and differ from the running engine, so a
// policy set on the engine directly (Server.Policy) holds until the store's
// changes.
func (s *Server) applySettings(ctx context.Context, st store.Settings, force bool) error {
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	e := s.o.engine
	prev := s.applied
	res := st.ResourcePolicy
	if res == "" {
		res = s.init.resource
	}
	if (force || st.ResourcePolicy != prev.ResourcePolicy) && res != e.ResourcePolicy() {
		if err := e.SetResourcePolicy(ctx, res); err != nil {
			return fmt.Errorf("stored resource policy: %w", err)
		}
	}
	id, src := st.AttestationPolicyID, st.AttestationPolicy
	if src == "" {
		id, src = s.init.attestationID, s.init.attestation
	}
	changed := st.AttestationPolicyID != prev.AttestationPolicyID || st.AttestationPolicy != prev.AttestationPolicy
	if curID, curSrc := e.AttestationPolicy(); (force || changed) && (curID != id || curSrc != src) {
		if err := e.SetAttestationPolicy(ctx, id, src); err != nil {
			return fmt.Errorf("stored attestation policy: %w", err)
		}
	}
	cur := e.ReferenceValues()
	for name, vs := range st.ReferenceValues {
		a, _ := json.Marshal(cur[name])
		b, _ := json.Marshal(vs)
		if _, ok := cur[name]; ok && string(a) == string(b) {
			continue
		}
		if p, ok := prev.ReferenceValues[name]; !force && ok {
			if c, _ := json.Marshal(p); string(c) == string(b) {
				continue
			}
		}
		if err := e.SetReferenceValue(ctx, name, vs); err != nil {
			return fmt.Errorf("stored reference value %q: %w", name, err)
		}
	}
	s.applied = st
	s.settingsVersion.Store(st.Version)
	return nil
}

// expirer is a state that can drop expired sessions (postgres, store.Local).
type expirer interface {
	Expire(ctx context.Context, now time.Time) (int64, error)
}

func (s *Server) startJanitor() {
	ex, ok := s.state.(expirer)
	if !ok {
		return
	}
	go func() {
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		for {
			select {
			case <-s.bg.Done():
				return
			case <-t.C:
			}
			if _, err := ex.Expire(s.bg, s.o.now()); err != nil {
				s.o.logger.Warn("kbs expired sessions not removed", "err", err)
			}
		}
	}()
}

// Close stops the broker's background work (the shared-policy watcher and
// the expiry of stored sessions). The store is the caller's to close.
func (s *Server) Close() error {
	s.stop()
	return nil
}

// sharedSession loads an attested session another replica (or this one,
// before a restart) stored; nil when there is none.
func (s *Server) sharedSession(ctx context.Context, id string, now time.Time) (*session, error) {
	tok, exp, err := s.state.GetSession(ctx, id, now)
	if errors.Is(err, spec.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	v, err := s.o.signer.Verify(string(tok), now)
	if err != nil {
		s.o.logger.Warn("kbs stored session's token does not verify here: do all replicas share --token-key?", "session", sessionLogID(id), "err", err)
		return nil, nil
	}
	g, err := grantOf(v)
	if err != nil {
		return nil, nil
	}
	s.tokens.put(string(tok), g, now)
	sess := &session{id: id, tee: protocol.Tee(g.tee), expires: exp, grant: g}
	if evicted := s.sessions.put(sess, now); evicted > 0 {
		s.m.evictions.Add(float64(evicted))
	}
	return sess, nil
}

// storeFailed answers a store error: 503 with the cause when the store is
// unreachable (the client should retry, possibly on another replica), 500
// otherwise. what names the failed step.
func (s *Server) storeFailed(w http.ResponseWriter, what string, err error) {
	if errors.Is(err, store.ErrUnavailable) {
		s.m.unavailable.Inc()
		s.o.logger.Error("kbs store unavailable", "step", what, "err", err)
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, protocol.ErrUnavailable,
			what+" failed: the broker's store is unavailable: retry, this or another replica") // the cause (addresses, names) is logged only
		return
	}
	s.o.logger.Error("kbs store", "step", what, "err", err)
	writeError(w, http.StatusInternalServerError, protocol.ErrInternal, what+" failed")
}

// healthz answers readiness: 503 when the store does not answer. With
// ?probe=live it answers liveness, which does not depend on the store (a
// database outage should take replicas out of the service, not restart them).
// It is unauthenticated, so it says only "ok" or "not ready": why (the
// store's error, which may name its host, user and database) goes to the
// log, and the store_unavailable count to the metrics.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if p, ok := s.o.store.(store.Pinger); ok && r.URL.Query().Get("probe") != "live" {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := p.Ping(ctx); err != nil {
			s.o.logger.Warn("healthz: not ready: store unavailable", "err", err)
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready\n"))
			return
		}
	}
	_, _ = w.Write([]byte("ok\n"))
}
