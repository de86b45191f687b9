package postgres

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// ResourceChannel is the LISTEN/NOTIFY channel of resource changes (the
// payload is the resource path).
const ResourceChannel = "coffer_kbs_resources"

// listener holds one connection LISTENing on both channels for the
// store's lifetime: settings changes go to the Watch callbacks, resource
// changes evict the resource cache. While it is not connected the cache is
// off (a change could be missed); every (re)connection clears the cache and
// calls the watchers, since changes made meanwhile were not heard.
type listener struct {
	s      *Store
	mu     sync.Mutex
	watch  []watcher
	cancel context.CancelFunc
	done   chan struct{}
}

type watcher struct {
	ctx context.Context
	f   func()
}

func (s *Store) startListener() {
	ctx, cancel := context.WithCancel(context.Background())
	l := &listener{s: s, cancel: cancel, done: make(chan struct{})}
	s.listen = l
	go l.run(ctx)
}

func (l *listener) stop() {
	l.cancel()
	<-l.done
}

func (l *listener) add(ctx context.Context, f func()) {
	l.mu.Lock()
	l.watch = append(l.watch, watcher{ctx, f})
	l.mu.Unlock()
}

// notifySettings calls the live watchers and forgets the finished ones.
func (l *listener) notifySettings() {
	l.mu.Lock()
	live := l.watch[:0]
	for _, w := range l.watch {
		if w.ctx.Err() == nil {
			live = append(live, w)
		}
	}
	l.watch = live
	fs := make([]func(), len(live))
	for i, w := range live {
		fs[i] = w.f
	}
	l.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

func (l *listener) run(ctx context.Context) {
	defer close(l.done)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := l.session(ctx, func() { backoff = 100 * time.Millisecond })
		l.s.cache.setLive(false)
		if ctx.Err() != nil {
			return
		}
		l.s.o.logger.Warn("kbs store listener lost its database connection: retrying", "err", classify(err), "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

func (l *listener) session(ctx context.Context, connected func()) error {
	cctx, cancel := context.WithTimeout(ctx, DefaultConnectTimeout)
	conn, err := pgx.ConnectConfig(cctx, l.s.pool.Config().ConnConfig.Copy())
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `LISTEN `+NotifyChannel+`; LISTEN `+ResourceChannel); err != nil {
		return err
	}
	connected()
	l.s.cache.setLive(true) // clears: changes made while not listening were missed
	l.notifySettings()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		switch n.Channel {
		case ResourceChannel:
			l.s.cache.evict(n.Payload)
		case NotifyChannel:
			l.notifySettings()
		}
	}
}

// resourceCache keeps decrypted resources a replica served, bounded in
// bytes, while the listener is connected. gen grows with every eviction: a
// value read from the database is cached only if no eviction happened
// since the read began, so a change racing the read is never masked.
type resourceCache struct {
	mu       sync.RWMutex
	m        map[string][]byte
	bytes    int
	maxBytes int
	gen      uint64
	live     bool
}

func (c *resourceCache) get(path string) ([]byte, uint64, bool) {
	if c.maxBytes <= 0 {
		return nil, 0, false
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	v, ok := c.m[path]
	if ok && c.live {
		return append([]byte(nil), v...), c.gen, true
	}
	return nil, c.gen, false
}

func (c *resourceCache) put(path string, v []byte, gen uint64) {
	size := len(path) + len(v) + 64
	if c.maxBytes <= 0 || size > c.maxBytes/16 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live || c.gen != gen {
		return
	}
	if old, ok := c.m[path]; ok {
		c.bytes -= len(path) + len(old) + 64
	}
	if c.bytes+size > c.maxBytes {
		clear(c.m)
		c.bytes = 0
	}
	c.m[path] = append([]byte(nil), v...)
	c.bytes += size
}

func (c *resourceCache) evict(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	if old, ok := c.m[path]; ok {
		clear(old)
		delete(c.m, path)
		c.bytes -= len(path) + len(old) + 64
	}
}

func (c *resourceCache) setLive(live bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for _, v := range c.m {
		clear(v)
	}
	clear(c.m)
	c.bytes = 0
	c.live = live
}
