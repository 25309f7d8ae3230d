package lambda

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spry-dev/spry/sdk"
)

// The API Gateway HTTP API (payload format 2.0) shapes, as handlers
// written against events.APIGatewayV2HTTPRequest and …Response expect.

type v2Request struct {
	Version         string            `json:"version"`
	RouteKey        string            `json:"routeKey"`
	RawPath         string            `json:"rawPath"`
	RawQueryString  string            `json:"rawQueryString"`
	Headers         map[string]string `json:"headers"`
	QueryString     map[string]string `json:"queryStringParameters,omitempty"`
	RequestContext  v2Context         `json:"requestContext"`
	Body            string            `json:"body"`
	IsBase64Encoded bool              `json:"isBase64Encoded"`
}

type v2Context struct {
	AccountID    string `json:"accountId"`
	APIID        string `json:"apiId"`
	DomainName   string `json:"domainName"`
	RequestID    string `json:"requestId"`
	RouteKey     string `json:"routeKey"`
	Stage        string `json:"stage"`
	Time         string `json:"time"`
	TimeEpoch    int64  `json:"timeEpoch"`
	HTTP         v2HTTP `json:"http"`
	DomainPrefix string `json:"domainPrefix"`
}

type v2HTTP struct {
	Method    string `json:"method"`
	Path      string `json:"path"`
	Protocol  string `json:"protocol"`
	SourceIP  string `json:"sourceIp"`
	UserAgent string `json:"userAgent"`
}

type v2Response struct {
	StatusCode      int               `json:"statusCode"`
	Headers         map[string]string `json:"headers"`
	Body            string            `json:"body"`
	IsBase64Encoded bool              `json:"isBase64Encoded"`
}

// httpEvent builds the request event of req.
func httpEvent(req *sdk.Request, id string) ([]byte, error) {
	now := time.Now()
	ev := v2Request{
		Version: "2.0", RouteKey: "$default", RawPath: req.Path(), RawQueryString: req.Query(),
		Headers: map[string]string{},
		RequestContext: v2Context{
			AccountID: "000000000000", APIID: "spry", DomainName: "localhost", DomainPrefix: "localhost",
			RequestID: id, RouteKey: "$default", Stage: "$default",
			Time: now.UTC().Format("02/Jan/2006:15:04:05 -0700"), TimeEpoch: now.UnixMilli(),
			HTTP: v2HTTP{Method: req.Method(), Path: req.Path(), Protocol: "HTTP/1.1", SourceIP: "127.0.0.1"},
		},
	}
	for i := range req.NumHeaders() {
		k, v := req.HeaderAt(i)
		ev.Headers[strings.ToLower(k)] = v
	}
	if ct := req.ContentType(); ct != "" {
		ev.Headers["content-type"] = ct
	}
	ev.RequestContext.HTTP.UserAgent = ev.Headers["user-agent"]
	if q := req.Query(); q != "" {
		ev.QueryString = map[string]string{}
		for _, kv := range strings.Split(q, "&") {
			k, v, _ := strings.Cut(kv, "=")
			if old, ok := ev.QueryString[k]; ok {
				v = old + "," + v
			}
			ev.QueryString[k] = v
		}
	}
	p := req.Payload()
	if utf8.Valid(p) {
		ev.Body = string(p)
	} else {
		ev.Body, ev.IsBase64Encoded = base64.StdEncoding.EncodeToString(p), true
	}
	return json.Marshal(ev)
}

// httpResult turns the response document in the first n bytes of
// res.Buffer() into the step's status, content type and body. A document
// without statusCode is a 200 with the document as a JSON body, as API
// Gateway does.
func httpResult(res *sdk.Response, n int) error {
	buf := res.Buffer()
	var r v2Response
	if err := json.Unmarshal(buf[:n], &r); err != nil || r.StatusCode == 0 {
		res.SetLen(n)
		res.SetContentType("application/json")
		return nil
	}
	body := []byte(r.Body)
	if r.IsBase64Encoded {
		b, err := base64.StdEncoding.DecodeString(r.Body)
		if err != nil {
			return sdk.Errorf(502, "spry: the Lambda function's response body is not base64: %v", err)
		}
		body = b
	}
	if len(body) > len(buf) {
		return sdk.Errorf(502, "spry: the Lambda function's response body (%d bytes) is larger than a pool buffer (%d)", len(body), len(buf))
	}
	res.SetLen(copy(buf, body))
	for k, v := range r.Headers {
		if strings.EqualFold(k, "Content-Type") {
			res.SetContentType(v)
		}
	}
	if r.StatusCode < 100 || r.StatusCode > 999 {
		return fmt.Errorf("spry: the Lambda function answered status %d", r.StatusCode)
	}
	res.SetStatus(r.StatusCode)
	return nil
}
