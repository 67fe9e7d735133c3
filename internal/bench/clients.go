package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
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

// Every call's input is distinct, so that no cache between the client and the model can answer
// it: the newest error rate of the window is 0.002 + k x 1e-9 on a caller's k-th call (k below a
// million), still a realistic value.
const perturbSpan = 1_000_000

func perturbed(k int) float64 { return 0.002 + float64(k%perturbSpan)*1e-9 }

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
// connection w mod conns. Each connection is checked with one call first.
func grpcCaller(ctx context.Context, addr string, workers, conns int, perturb bool) (callFunc, func(), error) {
	ccs, closeAll, err := dial(addr, conns)
	if err != nil {
		return nil, nil, err
	}
	clients := make([]aipb.AIServiceClient, len(ccs))
	for i, cc := range ccs {
		clients[i] = aipb.NewAIServiceClient(cc)
		cctx, cancel := context.WithTimeout(ctx, callCheckTimeout)
		resp, err := clients[i].PredictBandwidth(cctx, &aipb.BandwidthRequest{VmId: "check", HistoricalMetrics: window(0), HorizonMinutes: horizon})
		cancel()
		if err == nil {
			err = checkForecast(resp)
		}
		if err != nil {
			closeAll()
			return nil, nil, fmt.Errorf("check call on connection %d: %w", i, err)
		}
	}
	type state struct {
		req *aipb.BandwidthRequest
		k   int
	}
	st := make([]state, workers)
	for w := range st {
		st[w].req = &aipb.BandwidthRequest{VmId: "vm-" + strconv.Itoa(w), HistoricalMetrics: window(w), HorizonMinutes: horizon}
	}
	call := func(ctx context.Context, w int) error {
		s := &st[w]
		if perturb {
			s.k++
			s.req.HistoricalMetrics[59] = perturbed(s.k)
		}
		resp, err := clients[w%len(clients)].PredictBandwidth(ctx, s.req)
		if err != nil {
			return err
		}
		return checkForecast(resp)
	}
	return call, closeAll, nil
}

// batchCaller makes PredictBandwidthBatch calls of vms VMs each: worker w's VMs have seeds
// w*vms .. w*vms+vms-1.
func batchCaller(ctx context.Context, addr string, workers, conns, vms int) (callFunc, func(), error) {
	ccs, closeAll, err := dial(addr, conns)
	if err != nil {
		return nil, nil, err
	}
	clients := make([]aipb.AIServiceClient, len(ccs))
	for i, cc := range ccs {
		clients[i] = aipb.NewAIServiceClient(cc)
	}
	type state struct {
		req *aipb.BandwidthBatchRequest
		k   int
	}
	st := make([]state, workers)
	for w := range st {
		req := &aipb.BandwidthBatchRequest{Vms: make([]*aipb.BandwidthRequest, vms)}
		for j := range req.Vms {
			req.Vms[j] = &aipb.BandwidthRequest{VmId: fmt.Sprintf("vm-%d-%d", w, j), HistoricalMetrics: window(w*vms + j), HorizonMinutes: horizon}
		}
		st[w].req = req
	}
	call := func(ctx context.Context, w int) error {
		s := &st[w]
		s.k++
		s.req.Vms[0].HistoricalMetrics[59] = perturbed(s.k)
		resp, err := clients[w%len(clients)].PredictBandwidthBatch(ctx, s.req)
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

// jsonBody is a worker's POST /api/v1/predict body, built once; the digits of the perturbed value
// are rewritten in place before each call.
type jsonBody struct {
	b      []byte
	digits int // offset of the 6 digits after "0.002" in the last value
}

func newJSONBody(w int) jsonBody {
	win := window(w)
	b := []byte(`{"vm_id":"vm-` + strconv.Itoa(w) + `","horizon_minutes":` + strconv.Itoa(horizon) + `,"historical_metrics":[`)
	for _, v := range win[:len(win)-1] {
		b = strconv.AppendFloat(b, v, 'g', -1, 64)
		b = append(b, ',')
	}
	b = append(b, "0.002"...)
	digits := len(b)
	b = append(b, "000000]}"...)
	return jsonBody{b: b, digits: digits}
}

// set writes perturbed(k) as the last value: "0.002" followed by k mod 1e6 in six digits.
func (j jsonBody) set(k int) {
	k %= perturbSpan
	for i := 5; i >= 0; i-- {
		j.b[j.digits+i] = byte('0' + k%10)
		k /= 10
	}
}

// httpCaller makes POST /api/v1/predict calls with worker w's window as the body, over keep-alive
// connections (one per worker at most). One call is checked first.
func httpCaller(ctx context.Context, base string, workers int) (callFunc, func(), error) {
	tr := &http.Transport{MaxIdleConns: workers * 2, MaxIdleConnsPerHost: workers * 2, IdleConnTimeout: 30 * time.Second,
		DisableCompression: true}
	client := &http.Client{Transport: tr}
	url := base + "/api/v1/predict"
	type state struct {
		body jsonBody
		k    int
		resp bytes.Buffer
	}
	st := make([]state, workers)
	for w := range st {
		st[w].body = newJSONBody(w)
	}
	post := func(ctx context.Context, w int) (*bytes.Buffer, error) {
		s := &st[w]
		s.k++
		s.body.set(s.k)
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
