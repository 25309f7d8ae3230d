package bench

import (
	"fmt"
	"strconv"
	"time"

	"github.com/spry-dev/spry/sdk"
)

// Motion detection (SPRIGHT's IoT workload): a motion sensor posts two
// consecutive 16×16 grey frames; the sensor function diffs them and decides
// whether something moved, the actuator function decides whether to switch
// the sensor's light on. Each step costs ~1 ms of CPU. Traffic arrives in
// bursts every few seconds.

const (
	frameSide  = 16
	frameBytes = frameSide * frameSide
	motionCost = time.Millisecond
)

func init() {
	register("motion-", map[string]struct {
		doc string
		h   sdk.Handler
	}{
		"sensor":   {"bench: diffs two camera frames and appends motion=…, level=… (~1 ms)", MotionSensor},
		"actuator": {"bench: turns motion into a light command, as JSON (~1 ms)", MotionActuator},
	})
}

// The sensor's event: "sensor=ID\n" then two frames of frameBytes each.

// MotionSensor diffs the two frames of the event and appends the result.
func MotionSensor(req *sdk.Request, res *sdk.Response) error {
	p := req.Payload()
	nl := 0
	for nl < len(p) && p[nl] != '\n' {
		nl++
	}
	if nl+1+2*frameBytes != len(p) || string(p[:min(len(p), 7)]) != "sensor=" {
		return sdk.Errorf(400, "motion-sensor: want sensor=ID and two %d-byte frames, got %d bytes", frameBytes, len(p))
	}
	a, b := p[nl+1:nl+1+frameBytes], p[nl+1+frameBytes:]
	changed := 0
	for i := range a {
		d := int(a[i]) - int(b[i])
		if d < 0 {
			d = -d
		}
		if d > 24 {
			changed++
		}
	}
	Work(time.Duration(float64(motionCost) * current().Scale))
	// Keep only the id line; the frames are not needed downstream.
	w := res.Buffer()
	n := nl + 1
	line := fmt.Appendf(w[n:n], "motion=%d\nlevel=%d\n", b2i(changed > frameBytes/16), changed)
	res.SetLen(n + len(line))
	return nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// MotionActuator answers with the light command for the sensor.
func MotionActuator(req *sdk.Request, res *sdk.Response) error {
	p := req.Payload()
	id := field(p, "sensor")
	if id == nil {
		return sdk.Errorf(400, "motion-actuator: no sensor")
	}
	moved := string(field(p, "motion")) == "1"
	level, _ := strconv.Atoi(string(field(p, "level")))
	Work(time.Duration(float64(motionCost) * current().Scale))
	light := "off"
	if moved {
		light = "on"
	}
	res.SetContentType("application/json")
	res.WriteString(`{"sensor":"`)
	res.Write(id)
	res.WriteString(`","motion":` + strconv.FormatBool(moved) + `,"level":` + strconv.Itoa(level) + `,"light":"` + light + `"}`)
	return nil
}

func motion(o Options) (*Workload, error) {
	w := &Workload{
		Name:       "motion",
		Doc:        "motion detection: sensor → actuator, ~1 ms each, bursts",
		BufferSize: 4 << 10,
		Functions:  []Function{{Name: "sensor", Builtin: "motion-sensor"}, {Name: "actuator", Builtin: "motion-actuator"}},
		Chains:     []Chain{{Name: "motion", Route: "/motion", Steps: []string{"sensor", "actuator"}, Methods: []string{"POST"}}},
		Traffic:    Traffic{Every: or(o.BurstEvery, 2*time.Second), Burst: orInt(o.BurstSize, 40), Spread: 200 * time.Millisecond},
		Settings:   Settings{Scale: orFloat(o.Scale, 1)},
	}
	for k := range 16 {
		body := []byte("sensor=cam-" + strconv.Itoa(k) + "\n")
		for i := range 2 * frameBytes {
			v := (i*31 + k*17) % 200
			if i >= frameBytes && k%2 == 0 && (i-frameBytes)%frameSide < 8 {
				v = 255 - v // something moved in the left half
			}
			body = append(body, byte(v))
		}
		w.Requests = append(w.Requests, Request{Chain: "motion", Method: "POST", Target: "/motion", Body: body})
	}
	return w, nil
}

func or(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

func orInt(n, def int) int {
	if n > 0 {
		return n
	}
	return def
}

func orFloat(f, def float64) float64 {
	if f > 0 {
		return f
	}
	return def
}
