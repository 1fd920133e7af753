// Command echoserver is a tiny static TCP/HTTP server for the cluster smoke test.
//
//	echoserver [-listen 127.0.0.1:8080]
//
// For every HTTP request it answers "hello from <hostname>\n" plus the request path; a
// request to /echo answers with the request body. Plain TCP clients that do not speak HTTP
// get an HTTP 400 from net/http, so use curl or any HTTP client.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
)

func main() {
	listen := flag.String("listen", "0.0.0.0:8080", "address to listen on")
	flag.Parse()
	host, _ := os.Hostname()
	http.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, r.Body)
	})
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s %s\n", host, r.URL.Path)
	})
	log.Printf("echoserver listening on %s", *listen)
	log.Fatal(http.ListenAndServe(*listen, nil))
}
