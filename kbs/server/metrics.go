package server

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	reg          *prometheus.Registry
	requests     *prometheus.CounterVec
	attestations *prometheus.CounterVec
	releases     prometheus.Counter
	denials      *prometheus.CounterVec
	evictions    prometheus.Counter
	limited      prometheus.Counter
	unavailable  prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kbs_http_requests_total", Help: "HTTP requests by endpoint and status code.",
		}, []string{"endpoint", "code"}),
		attestations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kbs_attestations_total", Help: "Attestation results by tee and EAR status (or \"failed\").",
		}, []string{"tee", "status"}),
		releases: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kbs_resource_releases_total", Help: "Resources released to attested clients.",
		}),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kbs_resource_denials_total", Help: "Resource requests refused, by reason.",
		}, []string{"reason"}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kbs_sessions_evicted_total", Help: "Live sessions dropped because the session table was full.",
		}),
		limited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kbs_rate_limited_total", Help: "/auth and /attest calls refused by a per-address limit.",
		}),
		unavailable: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kbs_store_unavailable_total", Help: "Requests answered 503 because the store was unreachable.",
		}),
	}
	m.reg.MustRegister(m.requests, m.attestations, m.releases, m.denials, m.evictions, m.limited, m.unavailable)
	return m
}
