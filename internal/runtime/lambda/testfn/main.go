// testfn is an AWS Lambda function written with aws-lambda-go, knowing
// nothing of Spry, that the tests run as a lambda: function. With
// $EVENT=http it handles API Gateway v2 HTTP events; else JSON payloads:
//
//	{"name": "x"}        → {"greeting": "hello x"}
//	{"name": ""}         → an error (the Lambda error shape)
//	{"sleep_ms": N, …}   → sleeps first
//	$FAIL_INIT=1         → exits during init
//	$EVENT=contract      → the contract handler (internal/contract) on v2 events
//	$EVENT=chain         → the bench's chain step on the raw payload
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

type in struct {
	Name    string `json:"name"`
	SleepMS int    `json:"sleep_ms"`
}

type out struct {
	Greeting string `json:"greeting"`
	Function string `json:"function"`
	Deadline bool   `json:"deadline"`
}

func greet(ctx context.Context, e in) (out, error) {
	if e.SleepMS > 0 {
		time.Sleep(time.Duration(e.SleepMS) * time.Millisecond)
	}
	if e.Name == "" {
		return out{}, errors.New("no name given")
	}
	_, hasDeadline := ctx.Deadline()
	return out{Greeting: "hello " + e.Name, Function: lambdacontext.FunctionName, Deadline: hasDeadline}, nil
}

func api(ctx context.Context, e events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	if e.RawPath == "/lambda-http/missing" {
		return events.APIGatewayV2HTTPResponse{StatusCode: 404, Body: "no such thing"}, nil
	}
	return events.APIGatewayV2HTTPResponse{
		StatusCode: 201,
		Headers:    map[string]string{"Content-Type": "text/plain"},
		Body:       fmt.Sprintf("%s %s %s %s", e.RequestContext.HTTP.Method, e.RawPath, e.RawQueryString, strings.ToUpper(e.Body)),
	}, nil
}

// contract is the contract handler (see internal/contract) on API Gateway
// v2 events.
func contract(ctx context.Context, e events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error) {
	r := events.APIGatewayV2HTTPResponse{StatusCode: 200, Body: e.Body}
	switch e.RawPath {
	case "/inplace":
		r.Body = strings.ToUpper(e.Body)
	case "/status":
		fmt.Sscan(e.QueryStringParameters["code"], &r.StatusCode)
		r.Body = fmt.Sprintf("status %d", r.StatusCode)
	case "/error":
		return r, errors.New("boom")
	case "/meta":
		r.Body = fmt.Sprintf("%s %s %s %s", e.RequestContext.HTTP.Method, e.RawPath, e.RawQueryString, e.Headers["x-contract"])
	case "/sleep":
		var ms int
		fmt.Sscan(e.QueryStringParameters["ms"], &ms)
		time.Sleep(time.Duration(ms) * time.Millisecond)
	}
	return r, nil
}

// chainStep is the bench's chain step, as a raw-payload Lambda handler:
// it increments the eight-digit counter at the start of the event.
type chainStep struct{}

func (chainStep) Invoke(_ context.Context, p []byte) ([]byte, error) {
	if len(p) < 8 {
		return nil, errors.New("want a payload that starts with an 8-digit counter")
	}
	n := 0
	for _, c := range p[:8] {
		if c < '0' || c > '9' {
			return nil, errors.New("want a payload that starts with an 8-digit counter")
		}
		n = 10*n + int(c-'0')
	}
	n++
	for i := 7; i >= 0; i-- {
		p[i] = byte('0' + n%10)
		n /= 10
	}
	return p, nil
}

func main() {
	if os.Getenv("EVENT") == "chain" {
		lambda.Start(chainStep{})
	}
	if os.Getenv("EVENT") == "contract" {
		lambda.Start(contract)
	}
	if os.Getenv("FAIL_INIT") != "" {
		fmt.Fprintln(os.Stderr, "cannot load my configuration")
		os.Exit(3)
	}
	if os.Getenv("EVENT") == "http" {
		lambda.Start(api)
	}
	lambda.Start(greet)
}
