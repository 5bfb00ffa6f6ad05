package registry_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/choreokit/choreo/schema/registry"
)

// ExampleNew serves an in-memory registry on a loopback listener and uses
// it with franz-go's schema registry client: a compatible second version is
// accepted, an incompatible one is refused with HTTP 409.
func ExampleNew() {
	srv, err := registry.New() // registry.WithFile("registry.json") to keep the state
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	hs := &http.Server{Handler: srv}
	go hs.Serve(ln)
	defer hs.Close()

	cl, err := sr.NewClient(sr.URLs("http://" + ln.Addr().String()))
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	for _, text := range []string{
		`{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"}]}`,
		`{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"},{"name":"qty","type":"int","default":1}]}`,
		`{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"},{"name":"total","type":"long"}]}`,
	} {
		ss, err := cl.CreateSchema(ctx, "orders-value", sr.Schema{Schema: text})
		var refused *sr.ResponseError
		if errors.As(err, &refused) {
			fmt.Println("refused:", refused.StatusCode)
			continue
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("registered version %d with id %d\n", ss.Version, ss.ID)
	}
	// Output:
	// registered version 1 with id 1
	// registered version 2 with id 2
	// refused: 409
}
