module github.com/rendr-go/rendr

go 1.26.3

require (
	github.com/flynn/noise v1.1.0
	github.com/quic-go/quic-go v0.65.0
	go.uber.org/goleak v1.3.0
	golang.org/x/net v0.62.0
	golang.org/x/sys v0.49.0
)

require golang.org/x/crypto v0.58.0 // indirect
