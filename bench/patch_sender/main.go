// patch_sender sends a burst's annotation PATCHes as many nodewatch agents would: each on a TLS connection of its own,
// each at its planned moment. The requests themselves (path, headers, body) are built by nodewatch's own client on
// the Python side (bench/annotation_writers.py); this program only sends them, so that 500 of them cost the
// benchmark's 2 cores about half of what they cost from Python: in a cluster each agent runs on its own node.
//
// Usage: patch_sender CA_FILE WORKERS < input
// stdin line 1: JSON {"server": "https://host:port", "requests": [{"offset": s, "method": m, "path": p,
// "headers": {...}, "body": "..."}, ...]}; once ready it prints "ready"; stdin line 2: the start (seconds since the
// epoch, fractional). WORKERS goroutines take the requests in order, each waits for its request's moment (start +
// offset) and sends it. It prints one JSON line: [[sent, answered], ...] in the input's order (seconds since the
// epoch; sent -1 for a failed request, whose error goes to stderr) and exits 0, or exits 2 on bad input.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

type request struct {
	Offset  float64           `json:"offset"`
	Method  string            `json:"method"`
	Path    string            `json:"path"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

type plan struct {
	Server   string    `json:"server"`
	Requests []request `json:"requests"`
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "patch_sender: "+format+"\n", args...)
	os.Exit(2)
}

func epoch(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func main() {
	if len(os.Args) != 3 {
		fail("usage: patch_sender CA_FILE WORKERS")
	}
	workers, err := strconv.Atoi(os.Args[2])
	if err != nil || workers < 1 {
		fail("WORKERS %q: expected a positive integer", os.Args[2])
	}
	caPEM, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail("reading the CA: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		fail("%s holds no PEM certificate", os.Args[1])
	}
	in := bufio.NewReader(os.Stdin)
	line, err := in.ReadString('\n')
	if err != nil {
		fail("reading the plan: %v", err)
	}
	var p plan
	if err := json.Unmarshal([]byte(line), &p); err != nil {
		fail("the plan is not JSON: %v", err)
	}
	tlsConfig := &tls.Config{
		RootCAs:          roots,
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP521, tls.CurveP384},
	}
	fmt.Println("ready")
	line, err = in.ReadString('\n')
	if err != nil {
		fail("reading the start: %v", err)
	}
	startSeconds, err := strconv.ParseFloat(strings.TrimSpace(line), 64)
	if err != nil {
		fail("the start %q is not a number", strings.TrimSpace(line))
	}
	start := time.Unix(0, int64(startSeconds*1e9))

	times := make([][2]float64, len(p.Requests))
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				times[i] = send(tlsConfig, p.Server, p.Requests[i], start)
			}
		}()
	}
	for i := range p.Requests {
		next <- i
	}
	close(next)
	wg.Wait()
	out, _ := json.Marshal(times)
	fmt.Println(string(out))
}

// send makes one request on a connection of its own, closed after the answer, as http.client does: a transport
// per request (HTTP/1.1 only: a custom TLS config and no ForceAttemptHTTP2; no "Connection: close" header, which
// http.client does not send either), with the key exchange Python's OpenSSL 3.0 offers first. So the API server's
// side of each exchange is the one nodewatch causes.
func send(tlsConfig *tls.Config, server string, r request, start time.Time) [2]float64 {
	time.Sleep(time.Until(start.Add(time.Duration(r.Offset * 1e9))))
	transport := &http.Transport{TLSClientConfig: tlsConfig, DisableCompression: true}
	defer transport.CloseIdleConnections()
	client := &http.Client{Timeout: 30 * time.Second, Transport: transport}
	req, err := http.NewRequest(r.Method, server+r.Path, bytes.NewReader([]byte(r.Body)))
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s %s: %v\n", r.Method, r.Path, err)
		return [2]float64{-1, 0}
	}
	for name, value := range r.Headers {
		req.Header.Set(name, value)
	}
	sent := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s %s: %v\n", r.Method, r.Path, err)
		return [2]float64{-1, 0}
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	answered := time.Now()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s %s: reading the answer: %v\n", r.Method, r.Path, err)
		return [2]float64{-1, 0}
	}
	if resp.StatusCode < 200 || resp.StatusCode >= 300 {
		fmt.Fprintf(os.Stderr, "%s %s: answered HTTP %d\n", r.Method, r.Path, resp.StatusCode)
		return [2]float64{-1, 0}
	}
	return [2]float64{epoch(sent), epoch(answered)}
}
