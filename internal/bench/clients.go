package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	aipb "github.com/novacron/sidecar/proto/novacron/ai"
)

// window is a realistic 10-step window of the six VM metrics (cpu %, memory %, disk MB/s, network
// Mbit/s, latency ms, error rate), oldest step first: 60 values, distinct per seed.
func window(seed int) []float64 {
	w := make([]float64, 0, 60)
	for step := range 10 {
		x := float64(step+seed) / 10
		w = append(w,
			40+20*math.Sin(x),
			55+5*math.Cos(x),
			30+10*math.Sin(2*x),
			300+120*math.Sin(x+.5),
			8+3*math.Sin(x),
			0.002,
		)
	}
	return w
}

// Inputs. Every row a scenario sends is distinct, so that the prediction cache, which keys an
// answer on the model and the exact bits of its canonical row, can answer none of them: the
// scenario measures the path it names. Row n of a scenario (n counts from 1 over the scenario's
// life, check calls, warmup and every worker included) is a worker's or VM's window with n
// stamped into it. Only the cache-hit scenario repeats its inputs, each caller its own window.

// stampSlots are the indexes of the values Stamp writes: the error rates (feature 6 of 6) of the
// window's last six steps, low digit last. Read-only.
var stampSlots = [6]int{29, 35, 41, 47, 53, 59}

// stampBase is the base of Stamp's digits; stampMax bounds the n it tells apart.
const (
	stampBase = 1000
	stampMax  = stampBase * stampBase * stampBase * stampBase * stampBase * stampBase
)

// Stamp writes n (below 10^18; larger n wrap) into w, a window of the bandwidth spec's layout (10
// steps of the six metrics, error rate last): the error rates of its last six steps become
// 0.001 + d x 1e-6 for the six base-1000 digits d of n, each a realistic error rate of 0.1% to
// 0.2%. Windows stamped with different n differ in those values, whatever the rest of them holds,
// and so do their canonical rows under the bandwidth spec (z-score 0.01/0.03: one step of d is
// 3.3e-5, a thousand float32 ulps), which the cache's keys hash.
func Stamp(w []float64, n uint64) {
	n %= stampMax
	for i := len(stampSlots) - 1; i >= 0; i-- {
		w[stampSlots[i]] = stampValue(n % stampBase)
		n /= stampBase
	}
}

func stampValue(d uint64) float64 { return 0.001 + float64(d)*1e-6 }

// rowIDs hands out the row numbers of one scenario's caller; safe for concurrent use.
type rowIDs struct{ last atomic.Uint64 }

// next reserves k consecutive row numbers and returns the first.
func (r *rowIDs) next(k int) uint64 { return r.last.Add(uint64(k)) - uint64(k) + 1 }

// callCheckTimeout bounds the check call a caller makes before the load starts.
const callCheckTimeout = 10 * time.Second

func dial(addr string, conns int) ([]*grpc.ClientConn, func(), error) {
	var ccs []*grpc.ClientConn
	closeAll := func() {
		for _, cc := range ccs {
			cc.Close()
		}
	}
	for range conns {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)))
		if err != nil {
			closeAll()
			return nil, nil, err
		}
		ccs = append(ccs, cc)
	}
	return ccs, closeAll, nil
}

func checkForecast(r *aipb.BandwidthResponse) error {
	if n := len(r.GetPredictions()); n != horizon {
		return fmt.Errorf("answer has %d predictions, want %d", n, horizon)
	}
	return nil
}

// grpcCaller makes unary PredictBandwidth calls: worker w sends its own window (seed w) over
// connection w mod conns, with the next row number stamped into it on every call when distinct
// is set, and the same input on every call otherwise (the cache-hit scenario). Each connection is
// checked with one call first, a row of its own.
func grpcCaller(ctx context.Context, addr string, workers, conns int, distinct bool) (callFunc, func(), error) {
	ccs, closeAll, err := dial(addr, conns)
	if err != nil {
		return nil, nil, err
	}
	var ids rowIDs
	clients := make([]aipb.AIServiceClient, len(ccs))
	for i, cc := range ccs {
		clients[i] = aipb.NewAIServiceClient(cc)
		check := &aipb.BandwidthRequest{VmId: "check", HistoricalMetrics: window(0), HorizonMinutes: horizon}
		if distinct {
			Stamp(check.HistoricalMetrics, ids.next(1))
		}
		cctx, cancel := context.WithTimeout(ctx, callCheckTimeout)
		resp, err := clients[i].PredictBandwidth(cctx, check)
		cancel()
		if err == nil {
			err = checkForecast(resp)
		}
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("check call on connection %d: %w", i, err)
		}
	}
	reqs := make([]*aipb.BandwidthRequest, workers)
	for w := range reqs {
		reqs[w] = &aipb.BandwidthRequest{VmId: "vm-" + strconv.Itoa(w), HistoricalMetrics: window(w), HorizonMinutes: horizon}
	}
	call := func(ctx context.Context, w int) error {
		req := reqs[w]
		if distinct {
			Stamp(req.HistoricalMetrics, ids.next(1))
		}
		resp, err := clients[w%len(clients)].PredictBandwidth(ctx, req)
		if err != nil {
			return err
		}
		return checkForecast(resp)
	}
	return call, closeAll, nil
}

// batchCaller makes PredictBandwidthBatch calls of vms VMs each: worker w's VMs have seeds
// w*vms .. w*vms+vms-1, and when distinct is set every VM of every call gets the next row number
// stamped into its window, so no row repeats in the scenario; otherwise every call repeats the
// worker's rows.
func batchCaller(ctx context.Context, addr string, workers, conns, vms int, distinct bool) (callFunc, func(), error) {
	ccs, closeAll, err := dial(addr, conns)
	if err != nil {
		return nil, nil, err
	}
	clients := make([]aipb.AIServiceClient, len(ccs))
	for i, cc := range ccs {
		clients[i] = aipb.NewAIServiceClient(cc)
	}
	var ids rowIDs
	reqs := make([]*aipb.BandwidthBatchRequest, workers)
	for w := range reqs {
		req := &aipb.BandwidthBatchRequest{Vms: make([]*aipb.BandwidthRequest, vms)}
		for j := range req.Vms {
			req.Vms[j] = &aipb.BandwidthRequest{VmId: fmt.Sprintf("vm-%d-%d", w, j), HistoricalMetrics: window(w*vms + j), HorizonMinutes: horizon}
		}
		reqs[w] = req
	}
	call := func(ctx context.Context, w int) error {
		req := reqs[w]
		if distinct {
			n := ids.next(vms)
			for j, vm := range req.Vms {
				Stamp(vm.HistoricalMetrics, n+uint64(j))
			}
		}
		resp, err := clients[w%len(clients)].PredictBandwidthBatch(ctx, req)
		if err != nil {
			return err
		}
		if len(resp.Results) != vms {
			return fmt.Errorf("batch answer has %d results, want %d", len(resp.Results), vms)
		}
		for _, r := range resp.Results {
			if err := checkForecast(r); err != nil {
				return err
			}
		}
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, callCheckTimeout)
	defer cancel()
	if err := call(cctx, 0); err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("check call: %w", err)
	}
	return call, closeAll, nil
}

// jsonBody is a worker's POST /api/v1/predict body, built once: its window, with the digits of
// the values Stamp writes rewritten in place before each call.
type jsonBody struct {
	b []byte
	// digits holds the offsets of the 3 digits after "0.001" in the values at stampSlots.
	digits [len(stampSlots)]int
}

func newJSONBody(w int) jsonBody {
	win := window(w)
	var j jsonBody
	b := []byte(`{"vm_id":"vm-` + strconv.Itoa(w) + `","horizon_minutes":` + strconv.Itoa(horizon) + `,"historical_metrics":[`)
	slot := 0
	for i, v := range win {
		if i > 0 {
			b = append(b, ',')
		}
		if slot < len(stampSlots) && i == stampSlots[slot] {
			b = append(b, "0.001"...)
			j.digits[slot] = len(b)
			b = append(b, "000"...)
			slot++
			continue
		}
		b = strconv.AppendFloat(b, v, 'g', -1, 64)
	}
	j.b = append(b, "]}"...)
	return j
}

// set stamps row number n into the body, as Stamp does into a window: "0.001" followed by each
// base-1000 digit of n in three decimal digits.
func (j jsonBody) set(n uint64) {
	n %= stampMax
	for s := len(stampSlots) - 1; s >= 0; s-- {
		d := n % stampBase
		n /= stampBase
		for i := 2; i >= 0; i-- {
			j.b[j.digits[s]+i] = byte('0' + d%10)
			d /= 10
		}
	}
}

// httpCaller makes POST /api/v1/predict calls with worker w's window as the body, over keep-alive
// connections (one per worker at most), with the next row number stamped into it on every call
// when distinct is set (else the same body every call). One call is checked first.
func httpCaller(ctx context.Context, base string, workers int, distinct bool) (callFunc, func(), error) {
	tr := &http.Transport{MaxIdleConns: workers * 2, MaxIdleConnsPerHost: workers * 2, IdleConnTimeout: 30 * time.Second,
		DisableCompression: true}
	client := &http.Client{Transport: tr}
	url := base + "/api/v1/predict"
	var ids rowIDs
	type state struct {
		body jsonBody
		resp bytes.Buffer
	}
	st := make([]state, workers)
	for w := range st {
		st[w].body = newJSONBody(w)
	}
	post := func(ctx context.Context, w int) (*bytes.Buffer, error) {
		s := &st[w]
		if distinct {
			s.body.set(ids.next(1))
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(s.body.b))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		s.resp.Reset()
		_, err = s.resp.ReadFrom(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, oneLine(s.resp.String(), 200))
		}
		return &s.resp, nil
	}
	call := func(ctx context.Context, w int) error {
		_, err := post(ctx, w)
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, callCheckTimeout)
	defer cancel()
	body, err := post(cctx, 0)
	if err == nil {
		var r aipb.BandwidthResponse
		if err = protojson.Unmarshal(body.Bytes(), &r); err == nil {
			err = checkForecast(&r)
		}
	}
	if err != nil {
		tr.CloseIdleConnections()
		return nil, nil, fmt.Errorf("check call: %w", err)
	}
	return call, tr.CloseIdleConnections, nil
}
