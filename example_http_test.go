package rendr_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/rendr-go/rendr"
	"github.com/rendr-go/rendr/transport/tcp"
)

// HTTP over rendr: the listening side serves net/http on the rendr Listener (a net.Listener),
// and the dialing side's http.Transport dials with DialNetwork, so every HTTP connection is a
// flow that outlives the paths under it.
func ExampleDialer_DialNetwork() {
	srvKey, cliKey := rendr.MustNewKey(), rendr.MustNewKey()
	src, _ := tcp.Listen("127.0.0.1:0")
	ln, err := rendr.Listen(rendr.ListenConfig{Key: srvKey, Peers: []rendr.PublicKey{cliKey.Public()}}, src)
	if err != nil {
		panic(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello, %s", r.URL.Path[1:])
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	d, err := rendr.NewDialer(rendr.DialerConfig{Key: cliKey, PeerKey: srvKey.Public(),
		Root: rendr.Path("lo", tcp.Dialer(src.Addr().String()))})
	if err != nil {
		panic(err)
	}
	client := &http.Client{Transport: &http.Transport{DialContext: d.DialNetwork}, Timeout: 10 * time.Second}
	// The host in the URL is for HTTP alone: every connection goes to the rendr listener.
	resp, err := client.Get("http://service.internal/rendr")
	if err != nil {
		panic(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.Status, string(body))

	client.CloseIdleConnections()
	d.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	ln.Close()
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		fmt.Println("serve:", err)
	}
	// Output: 200 OK hello, rendr
}
