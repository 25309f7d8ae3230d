package bench

import (
	"context"
	"slices"

	"github.com/spry-dev/spry/sdk"
)

// Online Boutique with call and return, as the demo's frontend works: each
// page is one step, the frontend, which parses the request, calls the
// services it needs (those that do not need each other's answers at once,
// with req.Go, then Wait), and renders the page; the checkout service in
// turn calls cart, catalogue, currency, shipping, payment, email and cart
// again, one after another, as the demo's PlaceOrder does. The services
// are the linear chains' handlers: each gets the context document a call
// sends and answers it with its lines appended. The frontend appends each
// service's new lines in the linear chain's order, so the pages are the
// same as the linear chains'.

func init() {
	register("ob-", map[string]struct {
		doc string
		h   sdk.Handler
	}{
		"frontend-calls": {"bench (Online Boutique, call/return): parses the request, calls the services, renders the page", FrontendCalls},
		"checkout-calls": {"bench (Online Boutique, call/return): places the order, calling the services one after another", CheckoutCalls},
	})
}

// callStep is one service a page calls: in the linear chain's order, with
// the wave it is called in (a wave's calls run at once, each with what the
// earlier waves answered).
type callStep struct {
	fn   string
	wave int
}

// pageCalls are the calls of each page.
var pageCalls = map[string][]callStep{
	"home":        {{"productcatalog", 0}, {"currency", 1}, {"cart", 0}, {"ad", 0}},
	"product":     {{"productcatalog", 0}, {"currency", 1}, {"cart", 0}, {"recommendation", 0}, {"ad", 0}},
	"viewcart":    {{"cart", 0}, {"productcatalog", 1}, {"currency", 2}, {"shipping", 1}, {"recommendation", 1}},
	"addcart":     {{"productcatalog", 0}, {"cart", 0}},
	"setcurrency": {{"currency", 0}},
	"checkout":    {{"checkout", 0}},
}

// placeOrder is what the checkout service calls, one after another ("" is
// its own part: the order's id).
var placeOrder = []string{"cart", "productcatalog", "currency", "shipping", "", "payment", "email", "cart"}

// callWaves runs calls on doc and returns doc with every call's new lines
// appended in the calls' order.
func callWaves(req *sdk.Request, doc []byte, calls []callStep) ([]byte, error) {
	suffix := make([][]byte, len(calls))
	done := make([]bool, len(calls))
	waves := 0
	for _, c := range calls {
		waves = max(waves, c.wave+1)
	}
	for w := range waves {
		in := slices.Clone(doc)
		for i := range calls {
			if done[i] {
				in = append(in, suffix[i]...)
			}
		}
		futures := make([]sdk.Future, len(calls))
		for i, c := range calls {
			if c.wave == w {
				futures[i] = req.Go(context.Background(), c.fn, in)
			}
		}
		for i, c := range calls {
			if c.wave != w {
				continue
			}
			ans, err := futures[i].Wait()
			if err != nil {
				return nil, err
			}
			if len(ans) < len(in) {
				return nil, sdk.Errorf(502, "frontend: %s answered %d bytes to a document of %d", c.fn, len(ans), len(in))
			}
			suffix[i], done[i] = ans[len(in):], true
		}
	}
	out := doc
	for _, s := range suffix {
		out = append(out, s...)
	}
	return out, nil
}

// FrontendCalls is the frontend of the call/return boutique: the whole page.
func FrontendCalls(req *sdk.Request, res *sdk.Response) error {
	obWork()
	doc, err := parseDoc(req)
	if err != nil {
		return err
	}
	d := []byte(doc)
	d, err = callWaves(req, d, pageCalls[string(field(d, "route"))])
	if err != nil {
		return err
	}
	obWork()
	return renderPage(d, res)
}

// CheckoutCalls is the checkout service of the call/return boutique: it
// places the order with the services, and answers the document with their
// lines and its own appended.
func CheckoutCalls(req *sdk.Request, res *sdk.Response) error {
	in := req.Payload()
	doc := slices.Clone(in)
	for _, fn := range placeOrder {
		if fn == "" {
			obWork()
			order, err := orderID(doc)
			if err != nil {
				return err
			}
			doc = append(append(append(doc, "order="...), order...), '\n')
			continue
		}
		ans, err := req.Call(context.Background(), fn, doc)
		if err != nil {
			return err
		}
		doc = append(doc[:0], ans...)
	}
	a := newAppender(req, res)
	a.addBytes(doc[len(in):])
	return a.done()
}
