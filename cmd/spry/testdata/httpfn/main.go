// httpfn is a plain Go net/http server, knowing nothing of Spry, that the
// tests run as an http: function: it listens on $PORT and stops on SIGTERM,
// as the Knative runtime contract asks.
//
//	POST /...           the body upper-cased, text/plain
//	?status=N           answers status N (the body says so)
//	?ms=N               sleeps N ms first
//	?hang=1             never answers
//	?meta=1             method, path, query, X-Test and $K_SERVICE, one per line
//	/_/health           200 (OpenFaaS's health path)
package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

func main() {
	mux := http.NewServeMux()
	mux.HandleFunc("/_/health", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Get("meta") != "" {
			w.Header().Set("X-From-Function", "gohttp")
			w.Header().Add("Set-Cookie", "a=1")
			w.Header().Add("Set-Cookie", "b=2")
			fmt.Fprintf(w, "%s\n%s\n%s\n%s\n%s", r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("X-Test"), os.Getenv("K_SERVICE"))
			return
		}
		if q.Get("hang") != "" {
			<-r.Context().Done()
			return
		}
		if ms, _ := strconv.Atoi(q.Get("ms")); ms > 0 {
			time.Sleep(time.Duration(ms) * time.Millisecond)
		}
		body, _ := io.ReadAll(r.Body)
		if s, _ := strconv.Atoi(q.Get("status")); s != 0 {
			w.WriteHeader(s)
			fmt.Fprintf(w, "status %d", s)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write(bytes.ToUpper(body))
	})
	srv := &http.Server{Addr: "127.0.0.1:" + os.Getenv("PORT"), Handler: mux}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
