package bench

import (
	"hash/fnv"
	"strconv"
	"time"

	"github.com/spry-dev/spry/sdk"
)

// Parking: image detection and charging (SPRIGHT's second IoT workload). A
// camera posts a grey image of a car; five functions with very different
// costs handle it: plate detection (435 ms in SPRIGHT), plate search, plate
// index, persist metadata and charging (1 ms). The costs are scaled by
// --scale (default 0.05: 21.75 ms … 0.05 ms). Traffic comes in periodic
// bursts (SPRIGHT: every 240 s; here every 10 s unless told).

// Parking step costs at scale 1, in SPRIGHT's range of 1 to 435 ms.
var parkingCost = map[string]time.Duration{
	"detect":  435 * time.Millisecond,
	"search":  120 * time.Millisecond,
	"index":   25 * time.Millisecond,
	"persist": 8 * time.Millisecond,
	"charge":  1 * time.Millisecond,
}

const (
	imageW     = 96
	imageH     = 32
	plateChars = 7
	glyphW     = imageW / plateChars / 2 * 2
)

func init() {
	register("parking-", map[string]struct {
		doc string
		h   sdk.Handler
	}{
		"detect":  {"bench: reads the plate off a grey image (435 ms × scale)", ParkingDetect},
		"search":  {"bench: looks the plate up in the permit registry (120 ms × scale)", ParkingSearch},
		"index":   {"bench: files the sighting in its lot and hour bucket (25 ms × scale)", ParkingIndex},
		"persist": {"bench: builds and checksums the metadata record (8 ms × scale)", ParkingPersist},
		"charge":  {"bench: charges the stay and answers with a JSON receipt (1 ms × scale)", ParkingCharge},
	})
}

func parkingWork(step string) {
	Work(time.Duration(float64(parkingCost[step]) * current().Scale))
}

// The camera's event: "camera=ID\nlot=L\nminutes=M\n" then the image,
// imageW×imageH bytes. Each plate character c is drawn as a column band of
// brightness 'A'+… : the detector reads the band averages back.

// ParkingDetect reads the plate from the image and replaces the image by
// plate=… (the image is not needed further down the chain).
func ParkingDetect(req *sdk.Request, res *sdk.Response) error {
	p := req.Payload()
	hdr := 0
	for lines := 0; hdr < len(p) && lines < 3; hdr++ {
		if p[hdr] == '\n' {
			lines++
		}
	}
	img := p[hdr:]
	if len(img) != imageW*imageH {
		return sdk.Errorf(400, "parking-detect: want a %d×%d image, got %d bytes", imageW, imageH, len(img))
	}
	var plate [plateChars]byte
	for c := range plateChars {
		sum := 0
		for y := range imageH {
			for x := c * glyphW; x < (c+1)*glyphW; x++ {
				sum += int(img[y*imageW+x])
			}
		}
		plate[c] = byte((sum + glyphW*imageH/2) / (glyphW * imageH))
	}
	parkingWork("detect")
	a := appender{res: res, buf: res.Buffer(), n: hdr}
	a.add("plate=")
	a.addBytes(plate[:])
	a.add("\n")
	return a.done()
}

// registry answers plate lookups: owner and permit.
func registry(plate []byte) (owner string, permit string) {
	h := fnv.New32a()
	h.Write(plate)
	v := h.Sum32()
	owners := [...]string{"A. Rossi", "B. Chen", "C. Okafor", "D. Novak", "E. Silva", "F. Kaur"}
	permits := [...]string{"none", "resident", "staff", "visitor"}
	return owners[v%uint32(len(owners))], permits[v/7%uint32(len(permits))]
}

// ParkingSearch looks the plate up.
func ParkingSearch(req *sdk.Request, res *sdk.Response) error {
	plate := field(req.Payload(), "plate")
	if len(plate) != plateChars {
		return sdk.Errorf(422, "parking-search: no plate detected")
	}
	owner, permit := registry(plate)
	parkingWork("search")
	a := newAppender(req, res)
	a.line("owner", owner)
	a.line("permit", permit)
	return a.done()
}

// ParkingIndex files the sighting under lot and hour.
func ParkingIndex(req *sdk.Request, res *sdk.Response) error {
	p := req.Payload()
	lot, mins := field(p, "lot"), field(p, "minutes")
	m, err := strconv.Atoi(string(mins))
	if lot == nil || err != nil {
		return sdk.Errorf(400, "parking-index: missing lot or minutes")
	}
	parkingWork("index")
	a := newAppender(req, res)
	a.line("index", string(lot), "/", strconv.Itoa(m/60), "/", string(field(p, "plate")))
	return a.done()
}

// ParkingPersist builds the metadata record and its checksum.
func ParkingPersist(req *sdk.Request, res *sdk.Response) error {
	p := req.Payload()
	h := fnv.New64a()
	h.Write(p)
	parkingWork("persist")
	a := newAppender(req, res)
	a.line("record", strconv.FormatUint(h.Sum64(), 16))
	return a.done()
}

// ParkingCharge charges the stay: by the hour, free for residents and
// staff, and answers with a receipt.
func ParkingCharge(req *sdk.Request, res *sdk.Response) error {
	p := req.Payload()
	m, _ := strconv.Atoi(string(field(p, "minutes")))
	cents := (m + 59) / 60 * 250
	switch string(field(p, "permit")) {
	case "resident", "staff":
		cents = 0
	case "visitor":
		cents /= 2
	}
	parkingWork("charge")
	res.SetContentType("application/json")
	res.WriteString(`{"plate":"`)
	res.Write(field(p, "plate"))
	res.WriteString(`","owner":"`)
	res.Write(field(p, "owner"))
	res.WriteString(`","index":"`)
	res.Write(field(p, "index"))
	res.WriteString(`","record":"`)
	res.Write(field(p, "record"))
	_, err := res.WriteString(`","charge_cents":` + strconv.Itoa(cents) + "}")
	return err
}

func parking(o Options) (*Workload, error) {
	steps := []string{"detect", "search", "index", "persist", "charge"}
	w := &Workload{
		Name:       "parking",
		Doc:        "parking: plate detection → search → index → persist → charging, 1–435 ms × scale, periodic bursts",
		BufferSize: 8 << 10,
		Chains:     []Chain{{Name: "parking", Route: "/parking", Steps: steps, Methods: []string{"POST"}}},
		Traffic:    Traffic{Every: or(o.BurstEvery, 10*time.Second), Burst: orInt(o.BurstSize, 8), Spread: 500 * time.Millisecond},
		Settings:   Settings{Scale: orFloat(o.Scale, 0.05)},
	}
	for _, s := range steps {
		w.Functions = append(w.Functions, Function{Name: s, Builtin: "parking-" + s})
	}
	for k := range 12 {
		var plate [plateChars]byte
		for i := range plate {
			if i < 2 || i > 4 {
				plate[i] = byte('A' + (k*5+i*3)%26)
			} else {
				plate[i] = byte('0' + (k+i)%10)
			}
		}
		body := []byte("camera=gate-" + strconv.Itoa(k%3) + "\nlot=L" + strconv.Itoa(k%4) + "\nminutes=" + strconv.Itoa(15+k*37) + "\n")
		img := make([]byte, imageW*imageH)
		for y := range imageH {
			for x := range imageW {
				c := x / glyphW
				v := byte(20)
				if c < plateChars {
					// Noise that averages out over the glyph's band.
					v = plate[c] + byte((x+y)%3) - 1
				}
				img[y*imageW+x] = v
			}
		}
		body = append(body, img...)
		w.Requests = append(w.Requests, Request{Chain: "parking", Method: "POST", Target: "/parking", Body: body})
	}
	return w, nil
}
