package server

// WithStateDir keeps admin-set policies and reference values in dir (created
// 0700; files 0600, written atomically) and loads them at start, over any
// policy given with WithPolicy: the store.Local the broker keeps for a store
// without a state of its own (fs, memory) saves them there. A store that
// keeps policies itself (postgres) refuses it. Default: "" (in memory only).
func WithStateDir(dir string) Option {
	return func(o *options) error { o.stateDir = dir; return nil }
}
