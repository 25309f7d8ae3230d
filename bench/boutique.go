package bench

import (
	"bytes"
	"fmt"
	"hash/fnv"
	"math"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/spry-dev/spry/sdk"
)

// Online Boutique (Google's microservices demo) as Spry chains. The ten
// services are functions; each of the demo's six pages is a chain that the
// frontend starts (parsing the HTTP request into a context document) and
// ends (rendering the page), with the services it calls in between. Each
// service reads the context, looks up or computes its part and appends it
// in place. The cart is the client's (sent in X-Cart), so every function is
// stateless and every answer deterministic.

type product struct {
	id, name   string
	usdMicros  int64
	categories []string
}

// The demo's catalogue.
var products = []product{
	{"OLJCESPC7Z", "Sunglasses", 19_990_000, []string{"accessories"}},
	{"66VCHSJNUP", "Tank Top", 18_990_000, []string{"clothing", "tops"}},
	{"1YMWWN1N4O", "Watch", 109_990_000, []string{"accessories"}},
	{"L9ECAV7KIM", "Loafers", 89_990_000, []string{"footwear"}},
	{"2ZYFJ3GM2N", "Hairdryer", 24_990_000, []string{"hair", "beauty"}},
	{"0PUK6V6EV0", "Candle Holder", 18_990_000, []string{"decor", "home"}},
	{"LS4PSXUNUM", "Salt & Pepper Shakers", 18_490_000, []string{"kitchen"}},
	{"9SIQT8TOJO", "Bamboo Glass Jar", 5_490_000, []string{"kitchen"}},
	{"6E92ZMYYFZ", "Mug", 8_990_000, []string{"kitchen"}},
}

func findProduct(id []byte) *product {
	for i := range products {
		if products[i].id == string(id) {
			return &products[i]
		}
	}
	return nil
}

// The demo's conversion table (euros per unit of the currency's base).
var eurRates = map[string]float64{
	"EUR": 1, "USD": 1.1305, "JPY": 126.40, "GBP": 0.85970, "CAD": 1.5128, "CHF": 1.1360,
	"TRY": 6.1247, "SEK": 10.5375, "PLN": 4.2996, "AUD": 1.6072, "BRL": 4.2682, "INR": 79.4320,
}

var currencyCodes = func() []string {
	c := make([]string, 0, len(eurRates))
	for k := range eurRates {
		c = append(c, k)
	}
	slices.Sort(c)
	return c
}()

// convert turns USD micros into micros of code, rounded to cents.
func convert(usdMicros int64, code string) int64 {
	r, ok := eurRates[code]
	if !ok {
		r = 1.1305
		code = "USD"
	}
	v := float64(usdMicros) / eurRates["USD"] * r
	return int64(math.Round(v/10_000)) * 10_000
}

func money(code string, micros int64) string {
	return code + " " + strconv.FormatInt(micros/1_000_000, 10) + "." + fmt.Sprintf("%02d", micros%1_000_000/10_000)
}

// The demo's ads, by category.
var ads = map[string]string{
	"clothing":    "Tank top for sale. 20% off.|/product/66VCHSJNUP",
	"accessories": "Watch for sale. Buy one, get second kit for free|/product/1YMWWN1N4O",
	"footwear":    "Loafers for sale. Buy one, get second one for free|/product/L9ECAV7KIM",
	"hair":        "Hairdryer for sale. 50% off.|/product/2ZYFJ3GM2N",
	"decor":       "Candle holder for sale. 30% off.|/product/0PUK6V6EV0",
	"kitchen":     "Mug for sale. Buy two, get third one for free|/product/6E92ZMYYFZ",
}

func init() {
	register("ob-", map[string]struct {
		doc string
		h   sdk.Handler
	}{
		"frontend":       {"bench (Online Boutique): parses the request (first step) or renders the page (last step)", Frontend},
		"currency":       {"bench (Online Boutique): supported currencies, price conversion, currency changes", Currency},
		"productcatalog": {"bench (Online Boutique): product list and lookups", ProductCatalog},
		"cart":           {"bench (Online Boutique): cart size, items, adding and emptying", Cart},
		"recommendation": {"bench (Online Boutique): products you may like", Recommendation},
		"shipping":       {"bench (Online Boutique): shipping quotes and tracking ids", Shipping},
		"checkout":       {"bench (Online Boutique): validates and places the order", Checkout},
		"payment":        {"bench (Online Boutique): card validation (Luhn, type, expiry) and charge", Payment},
		"email":          {"bench (Online Boutique): renders the order confirmation email", Email},
		"ad":             {"bench (Online Boutique): contextual ads", Ad},
	})
}

// Context keys: route, user, currency, cart ("ID:qty,…"), product, form
// fields (f.NAME), then what the services add: p (ID|name|usd micros|cats),
// px (ID|micros in the user's currency), currencies, cartsize, item
// (ID|qty), rec, ad, shipping, tracking, order, tx, email.

func obWork() { Work(current().StepCPU) }

// Frontend is the first and the last step of every Online Boutique chain.
func Frontend(req *sdk.Request, res *sdk.Response) error {
	obWork()
	if req.Hop() == 0 {
		return frontendParse(req, res)
	}
	return frontendRender(req, res)
}

func frontendParse(req *sdk.Request, res *sdk.Response) error {
	doc, err := parseDoc(req)
	if err != nil {
		return err
	}
	res.SetContentType("text/plain")
	_, err = res.WriteString(doc)
	return err
}

// parseDoc turns the HTTP request into the context document.
func parseDoc(req *sdk.Request) (string, error) {
	var route string
	switch m, p := req.Method(), req.Path(); {
	case p == "/" && m == "GET":
		route = "home"
	case p == "/product" && m == "GET":
		route = "product"
	case p == "/cart" && m == "GET":
		route = "viewcart"
	case p == "/cart/add" && m == "POST":
		route = "addcart"
	case p == "/setCurrency" && m == "POST":
		route = "setcurrency"
	case p == "/cart/checkout" && m == "POST":
		route = "checkout"
	default:
		return "", sdk.Errorf(404, "frontend: no page %s %s", m, p)
	}
	user := req.Header("X-Session")
	if user == "" {
		return "", sdk.Errorf(400, "frontend: no session (X-Session)")
	}
	cur := req.Header("X-Currency")
	if cur == "" {
		cur = "USD"
	}
	var b strings.Builder
	b.Grow(512)
	line := func(k, v string) { b.WriteString(k); b.WriteByte('='); b.WriteString(v); b.WriteByte('\n') }
	line("route", route)
	line("user", user)
	line("currency", cur)
	line("cart", req.Header("X-Cart"))
	if q, err := url.ParseQuery(req.Query()); err == nil && q.Get("id") != "" {
		line("product", q.Get("id"))
	}
	if len(req.Payload()) > 0 {
		form, err := url.ParseQuery(string(req.Payload()))
		if err != nil {
			return "", sdk.Errorf(400, "frontend: bad form: %v", err)
		}
		keys := make([]string, 0, len(form))
		for k := range form {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			line("f."+k, strings.ReplaceAll(form.Get(k), "\n", " "))
		}
	}
	return b.String(), nil
}

// cartItems parses "ID:qty,ID:qty".
func cartItems(cart []byte) (ids []string, qty []int) {
	for _, it := range bytes.Split(cart, []byte{','}) {
		id, q, ok := bytes.Cut(it, []byte{':'})
		n, err := strconv.Atoi(string(q))
		if !ok || err != nil || n <= 0 {
			continue
		}
		ids = append(ids, string(id))
		qty = append(qty, n)
	}
	return ids, qty
}

// lines calls fn with the value of every line "key=…" of doc, in order.
func lines(doc []byte, key string, fn func(v []byte)) {
	for _, l := range bytes.Split(doc, []byte{'\n'}) {
		if len(l) > len(key) && l[len(key)] == '=' && string(l[:len(key)]) == key {
			fn(l[len(key)+1:])
		}
	}
}

func productLine(a *appender, p *product) {
	a.line("p", p.id, "|", p.name, "|", strconv.FormatInt(p.usdMicros, 10), "|", strings.Join(p.categories, ","))
}

// ProductCatalog lists or looks up products.
func ProductCatalog(req *sdk.Request, res *sdk.Response) error {
	obWork()
	doc := req.Payload()
	a := newAppender(req, res)
	switch string(field(doc, "route")) {
	case "home":
		for i := range products {
			productLine(&a, &products[i])
		}
	case "product":
		p := findProduct(field(doc, "product"))
		if p == nil {
			return sdk.Errorf(404, "productcatalog: no product %q", field(doc, "product"))
		}
		productLine(&a, p)
	case "addcart":
		p := findProduct(field(doc, "f.product_id"))
		if p == nil {
			return sdk.Errorf(404, "productcatalog: no product %q", field(doc, "f.product_id"))
		}
		productLine(&a, p)
	default: // viewcart, checkout: the cart's products
		seen := map[string]bool{}
		lines(doc, "item", func(v []byte) {
			id, _, _ := bytes.Cut(v, []byte{'|'})
			if p := findProduct(id); p != nil && !seen[p.id] {
				seen[p.id] = true
				productLine(&a, p)
			}
		})
	}
	return a.done()
}

// Currency converts prices into the user's currency, lists the supported
// currencies, and validates a change of currency.
func Currency(req *sdk.Request, res *sdk.Response) error {
	obWork()
	doc := req.Payload()
	a := newAppender(req, res)
	if string(field(doc, "route")) == "setcurrency" {
		code := string(field(doc, "f.currency_code"))
		if _, ok := eurRates[code]; !ok {
			return sdk.Errorf(400, "currency: %q is not supported", code)
		}
		a.line("currency", code)
		return a.done()
	}
	cur := string(field(doc, "currency"))
	if _, ok := eurRates[cur]; !ok {
		cur = "USD"
		a.line("currency", cur)
	}
	a.line("currencies", strings.Join(currencyCodes, ","))
	lines(doc, "p", func(v []byte) {
		parts := bytes.Split(v, []byte{'|'})
		if len(parts) < 3 {
			return
		}
		usd, _ := strconv.ParseInt(string(parts[2]), 10, 64)
		a.line("px", string(parts[0]), "|", strconv.FormatInt(convert(usd, cur), 10))
	})
	return a.done()
}

// Cart reports and changes the client's cart.
func Cart(req *sdk.Request, res *sdk.Response) error {
	obWork()
	doc := req.Payload()
	a := newAppender(req, res)
	ids, qty := cartItems(field(doc, "cart"))
	switch string(field(doc, "route")) {
	case "home", "product":
		n := 0
		for _, q := range qty {
			n += q
		}
		a.line("cartsize", strconv.Itoa(n))
	case "addcart":
		id := string(field(doc, "f.product_id"))
		q, err := strconv.Atoi(string(field(doc, "f.quantity")))
		if err != nil || q < 1 || q > 10 {
			return sdk.Errorf(400, "cart: quantity %q not in 1..10", field(doc, "f.quantity"))
		}
		if i := slices.Index(ids, id); i >= 0 {
			qty[i] += q
		} else {
			ids, qty = append(ids, id), append(qty, q)
		}
		var b strings.Builder
		for i := range ids {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(ids[i] + ":" + strconv.Itoa(qty[i]))
		}
		a.line("cart", b.String())
	default: // viewcart, checkout
		if field(doc, "order") != nil {
			a.line("cart", "") // the order is placed: empty the cart
			break
		}
		if len(ids) == 0 && string(field(doc, "route")) == "checkout" {
			return sdk.Errorf(400, "cart: the cart is empty")
		}
		for i := range ids {
			a.line("item", ids[i], "|", strconv.Itoa(qty[i]))
		}
	}
	return a.done()
}

func hashOf(parts ...[]byte) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write(p)
		h.Write([]byte{0})
	}
	return h.Sum64()
}

// Recommendation picks up to four products the user is not looking at and
// does not have in the cart.
func Recommendation(req *sdk.Request, res *sdk.Response) error {
	obWork()
	doc := req.Payload()
	skip := map[string]bool{string(field(doc, "product")): true}
	ids, _ := cartItems(field(doc, "cart"))
	for _, id := range ids {
		skip[id] = true
	}
	start := int(hashOf(field(doc, "user")) % uint64(len(products)))
	a := newAppender(req, res)
	for i, n := 0, 0; i < len(products) && n < 4; i++ {
		p := &products[(start+i)%len(products)]
		if !skip[p.id] {
			a.line("rec", p.id)
			n++
		}
	}
	return a.done()
}

// Ad picks an ad for the product's category (or the user's, on the home
// page).
func Ad(req *sdk.Request, res *sdk.Response) error {
	obWork()
	doc := req.Payload()
	cats := slices.Sorted(func(yield func(string) bool) {
		for k := range ads {
			if !yield(k) {
				return
			}
		}
	})
	cat := cats[hashOf(field(doc, "user"))%uint64(len(cats))]
	if p := findProduct(field(doc, "product")); p != nil {
		if _, ok := ads[p.categories[0]]; ok {
			cat = p.categories[0]
		}
	}
	a := newAppender(req, res)
	a.line("ad", ads[cat])
	return a.done()
}

// Shipping quotes by item count (the demo's flat 8.99 per shipment, 0 for
// an empty cart) and, at checkout, ships the order.
func Shipping(req *sdk.Request, res *sdk.Response) error {
	obWork()
	doc := req.Payload()
	_, qty := cartItems(field(doc, "cart"))
	n := 0
	for _, q := range qty {
		n += q
	}
	quote := int64(0)
	if n > 0 {
		quote = 8_990_000
	}
	a := newAppender(req, res)
	a.line("shipping", strconv.FormatInt(convert(quote, string(field(doc, "currency"))), 10))
	if string(field(doc, "route")) == "checkout" {
		addr := field(doc, "f.street_address")
		if len(addr) == 0 {
			return sdk.Errorf(400, "shipping: no address")
		}
		t := hashOf(addr, field(doc, "f.zip_code"), field(doc, "f.city"))
		a.line("tracking", fmt.Sprintf("%c%c-%d-%d", 'A'+t%26, 'A'+t/26%26, t/1000%100000, t/7%1000000))
	}
	return a.done()
}

// Checkout validates the order form and gives the order its id.
func Checkout(req *sdk.Request, res *sdk.Response) error {
	obWork()
	order, err := orderID(req.Payload())
	if err != nil {
		return err
	}
	a := newAppender(req, res)
	a.line("order", order)
	return a.done()
}

// orderID validates the order form of doc and returns the order's id.
func orderID(doc []byte) (string, error) {
	email := field(doc, "f.email")
	if !bytes.Contains(email, []byte{'@'}) {
		return "", sdk.Errorf(400, "checkout: %q is not an email address", email)
	}
	for _, k := range []string{"f.street_address", "f.zip_code", "f.city", "f.country"} {
		if len(field(doc, k)) == 0 {
			return "", sdk.Errorf(400, "checkout: missing %s", k[2:])
		}
	}
	return fmt.Sprintf("%016x", hashOf(field(doc, "user"), field(doc, "cart"), email)), nil
}

// Payment validates the card (Luhn, Visa or MasterCard, not expired) and
// charges the order's total.
func Payment(req *sdk.Request, res *sdk.Response) error {
	obWork()
	doc := req.Payload()
	card := field(doc, "f.credit_card_number")
	digits := make([]byte, 0, 19)
	for _, c := range card {
		if c >= '0' && c <= '9' {
			digits = append(digits, c)
		} else if c != ' ' && c != '-' {
			return sdk.Errorf(400, "payment: card number has a %q", c)
		}
	}
	if len(digits) < 13 || !luhn(digits) {
		return sdk.Errorf(400, "payment: card number is not valid")
	}
	kind := ""
	switch {
	case digits[0] == '4':
		kind = "visa"
	case digits[0] == '5' && digits[1] >= '1' && digits[1] <= '5':
		kind = "mastercard"
	default:
		return sdk.Errorf(400, "payment: only Visa and MasterCard are accepted")
	}
	y, _ := strconv.Atoi(string(field(doc, "f.credit_card_expiration_year")))
	m, _ := strconv.Atoi(string(field(doc, "f.credit_card_expiration_month")))
	if y*12+m < 2026*12+1 {
		return sdk.Errorf(400, "payment: card expired %d/%d", m, y)
	}
	total := orderTotal(doc)
	a := newAppender(req, res)
	a.line("tx", fmt.Sprintf("%s-%012x", kind, hashOf(field(doc, "order"), digits)%(1<<48)))
	a.line("charged", strconv.FormatInt(total, 10))
	return a.done()
}

func luhn(d []byte) bool {
	sum := 0
	for i := range d {
		v := int(d[len(d)-1-i] - '0')
		if i%2 == 1 {
			v *= 2
			if v > 9 {
				v -= 9
			}
		}
		sum += v
	}
	return sum%10 == 0
}

// orderTotal is the sum of the items in the user's currency plus shipping.
func orderTotal(doc []byte) int64 {
	px := map[string]int64{}
	lines(doc, "px", func(v []byte) {
		id, m, _ := bytes.Cut(v, []byte{'|'})
		px[string(id)], _ = strconv.ParseInt(string(m), 10, 64)
	})
	var total int64
	lines(doc, "item", func(v []byte) {
		id, q, _ := bytes.Cut(v, []byte{'|'})
		n, _ := strconv.Atoi(string(q))
		total += px[string(id)] * int64(n)
	})
	ship, _ := strconv.ParseInt(string(field(doc, "shipping")), 10, 64)
	return total + ship
}

// Email renders the confirmation email (and would send it).
func Email(req *sdk.Request, res *sdk.Response) error {
	obWork()
	doc := req.Payload()
	cur := string(field(doc, "currency"))
	var b strings.Builder
	b.WriteString("To: " + string(field(doc, "f.email")) + "\nSubject: Your Online Boutique order " + string(field(doc, "order")) + "\n\n")
	b.WriteString("Thanks for shopping with us!\n")
	lines(doc, "item", func(v []byte) {
		id, q, _ := bytes.Cut(v, []byte{'|'})
		if p := findProduct(id); p != nil {
			b.WriteString("  " + string(q) + " × " + p.name + "\n")
		}
	})
	b.WriteString("Shipping to " + string(field(doc, "f.street_address")) + ", " + string(field(doc, "f.city")) +
		"; tracking " + string(field(doc, "tracking")) + "\n")
	total, _ := strconv.ParseInt(string(field(doc, "charged")), 10, 64)
	b.WriteString("Total charged: " + money(cur, total) + "\n")
	a := newAppender(req, res)
	a.line("email", fmt.Sprintf("%d bytes to %s, digest %08x", b.Len(), field(doc, "f.email"), uint32(hashOf([]byte(b.String())))))
	return a.done()
}

// frontendRender renders the page from the context document.
func frontendRender(req *sdk.Request, res *sdk.Response) error {
	return renderPage(req.Payload(), res)
}

// renderPage renders the page of context document doc.
func renderPage(doc []byte, res *sdk.Response) error {
	cur := string(field(doc, "currency"))
	route := string(field(doc, "route"))
	px := map[string]int64{}
	lines(doc, "px", func(v []byte) {
		id, m, _ := bytes.Cut(v, []byte{'|'})
		px[string(id)], _ = strconv.ParseInt(string(m), 10, 64)
	})
	var h strings.Builder
	h.Grow(2048)
	h.WriteString("<!DOCTYPE html>\n<html><head><title>Online Boutique</title></head><body>\n")
	h.WriteString("<header>user " + html(field(doc, "user")) + " · currency " + html([]byte(cur)))
	if n := field(doc, "cartsize"); n != nil {
		h.WriteString(" · cart (" + string(n) + ")")
	}
	h.WriteString("</header>\n")
	productCard := func(v []byte) {
		parts := bytes.Split(v, []byte{'|'})
		if len(parts) < 2 {
			return
		}
		h.WriteString(`<div class="product"><a href="/product?id=` + string(parts[0]) + `">` + html(parts[1]) +
			"</a> " + money(cur, px[string(parts[0])]) + "</div>\n")
	}
	switch route {
	case "home":
		h.WriteString("<h1>Hot products</h1>\n")
		lines(doc, "p", productCard)
		h.WriteString("<select>" + strings.ReplaceAll(string(field(doc, "currencies")), ",", " ") + "</select>\n")
	case "product":
		lines(doc, "p", productCard)
		h.WriteString("<h2>You may also like</h2>\n")
		lines(doc, "rec", func(v []byte) {
			if p := findProduct(v); p != nil {
				h.WriteString(`<a href="/product?id=` + p.id + `">` + html([]byte(p.name)) + "</a>\n")
			}
		})
	case "viewcart":
		h.WriteString("<h1>Your cart</h1>\n")
		lines(doc, "item", func(v []byte) {
			id, q, _ := bytes.Cut(v, []byte{'|'})
			n, _ := strconv.Atoi(string(q))
			if p := findProduct(id); p != nil {
				h.WriteString("<div>" + strconv.Itoa(n) + " × " + html([]byte(p.name)) + " " + money(cur, px[p.id]*int64(n)) + "</div>\n")
			}
		})
		h.WriteString("<div>total " + money(cur, orderTotal(doc)) + "</div>\n")
		lines(doc, "rec", func(v []byte) { h.WriteString(`<a href="/product?id=` + string(v) + `">rec</a>` + "\n") })
	case "addcart":
		h.WriteString("<p>added; cart is now " + html(field(doc, "cart")) + "</p>\n")
	case "setcurrency":
		h.WriteString("<p>currency set to " + html([]byte(cur)) + "</p>\n")
	case "checkout":
		h.WriteString("<h1>Your order is complete!</h1>\n<p>order " + string(field(doc, "order")) + ", tracking " +
			string(field(doc, "tracking")) + ", paid " + money(cur, mustInt(field(doc, "charged"))) + " (" +
			string(field(doc, "tx")) + ")</p>\n<p>confirmation: " + html(field(doc, "email")) + "</p>\n")
	}
	if ad := field(doc, "ad"); ad != nil {
		text, link, _ := bytes.Cut(ad, []byte{'|'})
		h.WriteString(`<aside><a href="` + string(link) + `">` + html(text) + "</a></aside>\n")
	}
	h.WriteString("</body></html>\n")
	res.SetContentType("text/html; charset=utf-8")
	_, err := res.WriteString(h.String())
	return err
}

func mustInt(b []byte) int64 {
	n, _ := strconv.ParseInt(string(b), 10, 64)
	return n
}

var htmlEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&#34;", "'", "&#39;")

func html(b []byte) string { return htmlEscaper.Replace(string(b)) }

// The six chains of the demo's frontend. Add to cart is POST /cart in the
// demo; here it has a route of its own (a route is one chain).
var boutiqueChains = []Chain{
	{Name: "home", Route: "/", Methods: []string{"GET"},
		Steps: []string{"frontend", "productcatalog", "currency", "cart", "ad", "frontend"}},
	{Name: "product", Route: "/product", Methods: []string{"GET"},
		Steps: []string{"frontend", "productcatalog", "currency", "cart", "recommendation", "ad", "frontend"}},
	{Name: "viewcart", Route: "/cart", Methods: []string{"GET"},
		Steps: []string{"frontend", "cart", "productcatalog", "currency", "shipping", "recommendation", "frontend"}},
	{Name: "addcart", Route: "/cart/add", Methods: []string{"POST"},
		Steps: []string{"frontend", "productcatalog", "cart", "frontend"}},
	{Name: "setcurrency", Route: "/setCurrency", Methods: []string{"POST"},
		Steps: []string{"frontend", "currency", "frontend"}},
	{Name: "checkout", Route: "/cart/checkout", Methods: []string{"POST"},
		Steps: []string{"frontend", "cart", "productcatalog", "currency", "shipping", "checkout", "payment", "email", "cart", "frontend"}},
}

// boutiqueServices are the ten functions.
var boutiqueServices = []string{"frontend", "currency", "productcatalog", "cart", "recommendation", "shipping", "checkout", "payment", "email", "ad"}

func boutique(o Options) (*Workload, error) {
	w := &Workload{
		Name:       "boutique",
		Doc:        "Online Boutique: 10 services, 6 request chains",
		BufferSize: 16 << 10,
	}
	for _, s := range boutiqueServices {
		w.Functions = append(w.Functions, Function{Name: s, Builtin: "ob-" + s})
	}
	headers := []string{"X-Session", "X-Currency", "X-Cart"}
	for _, c := range boutiqueChains {
		c.Headers = headers
		w.Chains = append(w.Chains, c)
	}
	want := map[string]bool{}
	for _, c := range o.Chains {
		want[c] = true
	}
	pages := []string{"home", "product", "viewcart", "addcart", "setcurrency", "checkout"}
	for c := range want {
		if !slices.Contains(pages, c) {
			return nil, fmt.Errorf("bench: boutique: no chain %q (chains: %s)", c, strings.Join(pages, ", "))
		}
	}
	use := func(page string) bool { return len(want) == 0 || want[page] }
	users := []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"}
	currencies := []string{"USD", "EUR", "JPY", "GBP", "CAD", "CHF", "TRY", "SEK"}
	carts := []string{"OLJCESPC7Z:1", "66VCHSJNUP:2,9SIQT8TOJO:1", "1YMWWN1N4O:1,L9ECAV7KIM:1,6E92ZMYYFZ:3", "2ZYFJ3GM2N:1", ""}
	hdr := func(i int, cart string) [][2]string {
		return [][2]string{{"X-Session", users[i%len(users)]}, {"X-Currency", currencies[i%len(currencies)]}, {"X-Cart", cart}}
	}
	// Weights after the demo's load generator: index 1, setCurrency 2,
	// browseProduct 10, addToCart 2, viewCart 3, checkout 1 (× 4 variants).
	for i := range 4 {
		cart := carts[i%len(carts)]
		if use("home") {
			w.Requests = append(w.Requests, Request{Chain: "home", Method: "GET", Target: "/", Header: hdr(i, cart), Weight: 1})
		}
		if use("product") {
			w.Requests = append(w.Requests, Request{Chain: "product", Method: "GET", Target: "/product?id=" + products[(i*2)%len(products)].id, Header: hdr(i+1, cart), Weight: 10})
		}
		if use("viewcart") {
			w.Requests = append(w.Requests, Request{Chain: "viewcart", Method: "GET", Target: "/cart", Header: hdr(i+2, carts[(i+1)%4]), Weight: 3})
		}
		if use("addcart") {
			body := "product_id=" + products[(i*3+1)%len(products)].id + "&quantity=" + strconv.Itoa(i%3+1)
			w.Requests = append(w.Requests, Request{Chain: "addcart", Method: "POST", Target: "/cart/add", Header: hdr(i+3, cart), Body: []byte(body), Weight: 2})
		}
		if use("setcurrency") {
			w.Requests = append(w.Requests, Request{Chain: "setcurrency", Method: "POST", Target: "/setCurrency", Header: hdr(i+4, cart), Body: []byte("currency_code=" + currencies[(i+3)%len(currencies)]), Weight: 2})
		}
		if use("checkout") {
			body := url.Values{
				"email": {users[i] + "@example.com"}, "street_address": {strconv.Itoa(1600+i) + " Amphitheatre Parkway"},
				"zip_code": {"94043"}, "city": {"Mountain View"}, "state": {"CA"}, "country": {"United States"},
				"credit_card_number":           {[]string{"4432-8015-6152-0454", "5555 5555 5555 4444"}[i%2]},
				"credit_card_expiration_month": {"1"}, "credit_card_expiration_year": {"2030"}, "credit_card_cvv": {"672"},
			}.Encode()
			w.Requests = append(w.Requests, Request{Chain: "checkout", Method: "POST", Target: "/cart/checkout", Header: hdr(i+5, carts[(i+1)%4]), Body: []byte(body), Weight: 1})
		}
	}
	// Keep only the chains some request uses.
	used := map[string]bool{}
	for _, r := range w.Requests {
		used[r.Chain] = true
	}
	w.Chains = slices.DeleteFunc(w.Chains, func(c Chain) bool { return !used[c.Name] })
	// The variant with call and return: every page is the frontend's one
	// step, which calls the services (and checkout calls others).
	// The callers are concurrent servers, as the demo's are: a handler
	// waiting on its calls leaves its instance to other requests (with
	// concurrency 1 they would run nested on top of it, and it could only
	// return once they did).
	calls := Variant{Doc: "the frontend calls the services (call/return), as the demo does"}
	for _, s := range boutiqueServices {
		f := Function{Name: s, Builtin: "ob-" + s}
		if s == "frontend" || s == "checkout" {
			f.Builtin += "-calls"
			f.Concurrency = callerConcurrency
		}
		calls.Functions = append(calls.Functions, f)
	}
	for _, c := range w.Chains {
		vc := Chain{Name: c.Name, Route: c.Route, Methods: c.Methods, Headers: c.Headers, Steps: []string{"frontend"}}
		for _, cs := range pageCalls[c.Name] {
			vc.Calls = append(vc.Calls, [2]string{"frontend", cs.fn})
			if cs.fn == "checkout" {
				for _, fn := range placeOrder {
					if fn != "" {
						vc.Calls = append(vc.Calls, [2]string{"checkout", fn})
					}
				}
			}
		}
		calls.Chains = append(calls.Chains, vc)
	}
	w.Variants = map[string]Variant{"calls": calls}
	return w, nil
}

// callerConcurrency is the concurrency of the call/return variant's
// callers: requests a frontend instance runs at once, most of them waiting
// on their calls.
const callerConcurrency = 16
