package isolation

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// A read of one statement costs, through Run, the round trip of its BEGIN
// (which carries the binding), its own, and its COMMIT's. OneRead lets a
// strategy send all three at once, in one pipeline of the extended
// protocol, so that a tenant-bound point read costs the one round trip the
// same statement sent alone would.

type oneReadKey struct{}

// OneRead returns ctx marking the work of the Run it is given to as one
// read: fn sends exactly one statement, through Query, QueryRow or Exec
// of the pgx.Tx it is given, and that statement only reads. The strategy
// then sends BEGIN READ ONLY, the binding, the statement and COMMIT in one
// pipeline: one round trip. The transaction is read-only, so a statement
// that writes fails rather than commit unseen; a second statement, or any
// other use of the Tx, is an error. Results arrive before fn decides
// anything, so the transaction commits whatever fn returns — harmless for
// a read. Strategies that do not know the mark run fn as usual.
func OneRead(ctx context.Context) context.Context {
	return context.WithValue(ctx, oneReadKey{}, true)
}

// IsOneRead reports whether ctx carries OneRead's mark.
func IsOneRead(ctx context.Context) bool {
	v, _ := ctx.Value(oneReadKey{}).(bool)
	return v
}

// NotOneRead returns ctx without OneRead's mark: for a decoration of
// Strategy.Run that sends statements of its own beside fn's.
func NotOneRead(ctx context.Context) context.Context {
	return context.WithValue(ctx, oneReadKey{}, false)
}

// ErrNotOneRead is what the Tx of a OneRead run returns to a second
// statement or to anything but Query, QueryRow and Exec.
var ErrNotOneRead = errors.New("isolation: a OneRead run sends exactly one statement, through Query, QueryRow or Exec")

// RunOn runs fn in a transaction of conn opened by BEGIN and the binding
// statements bind (BindStatements), and commits it when fn returns nil. The
// BEGIN and the binding travel in one message; with ctx marked by OneRead,
// the statement and COMMIT travel with them (see OneRead). A failed
// transaction is rolled back; should that fail too, the connection is left
// in a transaction, which pgxpool destroys on release.
func RunOn(ctx context.Context, conn *pgx.Conn, bind []Step, fn func(pgx.Tx) error) error {
	return RunOnScoped(ctx, conn, "", bind, fn)
}

// RunOnScoped is RunOn for a binding under which the same statement text
// means something else for each scope (a schema tenant's search_path and
// role: PostgreSQL analyses and plans a prepared statement again whenever
// either differs from the last execution's). A OneRead's statement is then
// prepared once per scope on a connection, and a tenant served by the
// connection before finds its statement planned for it.
func RunOnScoped(ctx context.Context, conn *pgx.Conn, scope string, bind []Step, fn func(pgx.Tx) error) error {
	if !IsOneRead(ctx) {
		return pgx.BeginTxFunc(ctx, conn, BeginOptions(bind), fn)
	}
	tx := &oneReadTx{conn: conn, bind: bind, key: scope + "\x00"}
	err := fn(tx)
	if ferr := tx.finish(ctx); err == nil {
		err = ferr
	}
	return err
}

// directKey is where a connection's CustomData keeps whether it prepares
// and keeps its statements (prepares).
const directKey = "isolation.oneread.direct"

// PreparesStatements reports whether connections of cfg prepare their
// statements and keep them (pgx's QueryExecModeCacheStatement: no
// transaction-mode pooler between), so that a statement's plan can serve
// again.
func PreparesStatements(cfg *pgx.ConnConfig) bool {
	return cfg.DefaultQueryExecMode == pgx.QueryExecModeCacheStatement
}

// prepares is PreparesStatements for conn, whose CustomData is data, read
// once per connection: pgx hands its configuration out only as a copy,
// maps and all.
func prepares(conn *pgx.Conn, data map[string]any) bool {
	v, ok := data[directKey].(bool)
	if !ok {
		v = PreparesStatements(conn.Config())
		data[directKey] = v
	}
	return v
}

// missingStatement reports whether err is PostgreSQL not knowing a
// prepared statement (someone ran DEALLOCATE ALL, say).
func missingStatement(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "26000"
}

// BeginOptions returns the options of a transaction that BEGINs with the
// binding's steps bind (BindStatements) in the same message.
func BeginOptions(bind []Step) pgx.TxOptions {
	return pgx.TxOptions{BeginQuery: "BEGIN; " + strings.Join(Statements(bind), "; ")}
}

// oneReadTx is the pgx.Tx of a OneRead run: its first statement sends the
// whole transaction.
type oneReadTx struct {
	conn *pgx.Conn
	bind []Step
	sql  string // the one statement, once sent
	key  string // its key among the connection's statements: the scope, then sql
	// commitFresh: COMMIT was prepared in this pipeline, and its
	// description comes before its result.
	commitFresh bool
	// fresh: the statement was prepared in this pipeline.
	fresh bool
	pipe  *pgconn.Pipeline
	rows  pgx.Rows
	err   error
}

var _ pgx.Tx = (*oneReadTx)(nil)

// send sends the transaction with sql as its statement and returns the
// statement's rows. Everything but reading them is done by finish.
//
// Direct connections prepare each statement once per connection and reuse
// it, as pgx does (a named statement, remembered in the connection's
// CustomData); it is prepared inside the transaction, after the binding,
// so that its names resolve in the tenant's search_path. The first time,
// the statement's Parse and Describe travel in the same pipeline as its
// first execution, which binds its parameters in text, as pgx's exec mode
// does (their types are not known yet): a connection's first read costs
// one round trip too — what a brand-new connection of the database
// strategy serves, often only once. Behind a transaction-mode pooler a
// prepared statement may be on another server connection next time, so
// the statement is parsed each time with its parameters in text.
func (tx *oneReadTx) send(ctx context.Context, sql string, args []any) (pgx.Rows, error) {
	if tx.sql != "" {
		return nil, ErrNotOneRead
	}
	tx.sql = sql
	tx.key += sql
	data := tx.conn.PgConn().CustomData()
	direct := prepares(tx.conn, data)
	var sd *pgconn.StatementDescription
	var evict string // the statement this pipeline deallocates first
	var cache *statementCache
	if direct {
		cache = statementsOf(data)
		sd = cache.get(tx.key)
		if sd == nil {
			evict = cache.evict()
		}
	}
	tx.fresh = direct && sd == nil // prepared in this pipeline
	var eqb pgx.ExtendedQueryBuilder
	if err := eqb.Build(tx.conn.TypeMap(), sd, args); err != nil {
		return nil, err
	}
	pipe := tx.conn.PgConn().StartPipeline(ctx)
	tx.pipe = pipe
	if evict != "" {
		pipe.SendDeallocate(evict)
	}
	// The transaction's own statements (BEGIN, the binding, the bounds,
	// the fence, COMMIT) are the same text on every read, the binding's
	// steps folded into one SELECT with the tenant's values as its
	// arguments (fold): a direct connection prepares them as it meets
	// them, up to maxControl of them, and then sends only their Bind and
	// Execute — no parse, no analysis, no plan.
	var prepared map[string]string // the connection's, by text: their names
	if direct {
		prepared = controlsOf(data)
	}
	var fresh []string // prepared in this pipeline, in order
	sendControl := func(c control) {
		if name, ok := prepared[c.sql]; ok {
			pipe.SendQueryPrepared(name, c.args, nil, nil)
			return
		}
		switch {
		case direct && slices.Contains(fresh, c.sql):
			pipe.SendQueryPrepared(controlName(c.sql), c.args, nil, nil)
		case direct && len(prepared)+len(fresh) < maxControl:
			fresh = append(fresh, c.sql)
			name := controlName(c.sql)
			pipe.SendPrepare(name, c.sql, nil)
			pipe.SendQueryPrepared(name, c.args, nil, nil)
		default:
			pipe.SendQueryParams(c.sql, c.args, nil, nil, nil)
		}
	}
	opening := append([]control{{sql: "BEGIN READ ONLY"}}, controls(tx.bind)...)
	for _, c := range opening {
		sendControl(c)
	}
	first := fresh // those whose descriptions come before the statement's
	switch {
	case tx.fresh:
		pipe.SendPrepare(statementName(tx.key), sql, nil)
		pipe.SendQueryPrepared(statementName(tx.key), eqb.ParamValues, eqb.ParamFormats, eqb.ResultFormats)
	case sd != nil:
		pipe.SendQueryStatement(sd, eqb.ParamValues, eqb.ParamFormats, eqb.ResultFormats)
	default:
		pipe.SendQueryParams(sql, eqb.ParamValues, nil, eqb.ParamFormats, eqb.ResultFormats)
	}
	sendControl(control{sql: "COMMIT"})
	tx.commitFresh = len(fresh) > len(first)
	if err := pipe.Sync(); err != nil {
		return nil, err
	}
	if evict != "" {
		res, err := pipe.GetResults()
		if err != nil {
			return nil, err
		}
		if _, ok := res.(*pgconn.CloseComplete); !ok {
			return nil, fmt.Errorf("isolation: one read: got %T for a deallocation", res)
		}
	}
	// Each control statement's description (when it was prepared here),
	// then its result, in the order sent.
	next := 0
	for _, c := range opening {
		if next < len(first) && first[next] == c.sql {
			next++
			if err := tx.keepControl(c.sql); err != nil {
				return nil, err
			}
		}
		if err := closeResult(pipe); err != nil {
			return nil, err
		}
	}
	if tx.fresh {
		res, err := pipe.GetResults()
		if err != nil {
			return nil, err
		}
		got, ok := res.(*pgconn.StatementDescription)
		if !ok {
			return nil, fmt.Errorf("isolation: one read: got %T for the prepared statement", res)
		}
		got.Name, got.SQL = statementName(tx.key), sql
		cache.put(tx.key, got)
	}
	res, err := pipe.GetResults()
	if err != nil {
		return nil, err
	}
	rr, ok := res.(*pgconn.ResultReader)
	if !ok {
		return nil, fmt.Errorf("isolation: one read: got %T for the statement", res)
	}
	tx.rows = pgx.RowsFromResultReader(tx.conn.TypeMap(), rr)
	return tx.rows, nil
}

// A control is one of the statements a one-statement read sends around its
// own: BEGIN, the binding's, COMMIT.
type control struct {
	sql  string
	args [][]byte // in text, or nil
}

// controls returns the statements that send steps: one SELECT of their
// calls when every step has one (fold), else each as a statement of its
// own.
func controls(steps []Step) []control {
	if sql, args, ok := fold(steps); ok {
		return []control{{sql: sql, args: args}}
	}
	out := make([]control, len(steps))
	for i, s := range steps {
		out[i] = control{sql: s.SQL}
	}
	return out
}

// maxStatements bounds the statements one connection keeps prepared for
// OneRead runs, the least recently used deallocated to make room. The
// schema strategy prepares each read once per tenant a connection serves:
// at 1,000 tenants its four read statements are 4,000 on a connection that
// serves them all. When they do not fit, the least recently used order
// turns against a uniform spread of tenants: nearly every read finds its
// statement gone, deallocates another, and is prepared and planned again.
// The price is the backend's memory: a backend that served four reads of
// each of 1,000 schema tenants held 180 MB more, 45 kB a statement
// (BenchmarkStatementMemory in isolation/schema, PostgreSQL 15: the
// statements' plan sources and generic plans, and the relation and
// catalog cache entries of the tenants' tables, which it would hold
// anyway), so up to some 180 MB a connection. Only connections that
// serve that many tenants get there: the pool hands out the connection
// released last, so a few do most of the work.
const maxStatements = 4096

// statementCache is the statements one connection keeps prepared for
// OneRead runs, by key (scope and text), most recently used first. It lives
// in the connection's CustomData, so it is used by one goroutine at a time.
type statementCache struct {
	byKey map[string]*list.Element // of cachedStatement
	order list.List
}

type cachedStatement struct {
	key string
	sd  *pgconn.StatementDescription
}

// preparedKey is where a connection's CustomData keeps its
// statementCache.
const preparedKey = "isolation.oneread.statements"

// statementsOf returns the statementCache of the connection whose
// CustomData is data.
func statementsOf(data map[string]any) *statementCache {
	c, _ := data[preparedKey].(*statementCache)
	if c == nil {
		c = &statementCache{byKey: map[string]*list.Element{}}
		data[preparedKey] = c
	}
	return c
}

// get returns the statement prepared under key, or nil, and marks it the
// most recently used.
func (c *statementCache) get(key string) *pgconn.StatementDescription {
	e := c.byKey[key]
	if e == nil {
		return nil
	}
	c.order.MoveToFront(e)
	return e.Value.(cachedStatement).sd
}

// evict forgets the least recently used statement when the cache is full
// and returns its name, which the caller must deallocate; else "".
func (c *statementCache) evict() string {
	if c.order.Len() < maxStatements {
		return ""
	}
	old := c.order.Remove(c.order.Back()).(cachedStatement)
	delete(c.byKey, old.key)
	return old.sd.Name
}

func (c *statementCache) put(key string, sd *pgconn.StatementDescription) {
	c.byKey[key] = c.order.PushFront(cachedStatement{key: key, sd: sd})
}

// forget forgets the statement of key and reports whether there was one.
func (c *statementCache) forget(key string) bool {
	e := c.byKey[key]
	if e == nil {
		return false
	}
	c.order.Remove(e)
	delete(c.byKey, key)
	return true
}

// statementName is the name of the prepared statement of key: its digest,
// so that it is short and its own (pgx names its statements otherwise).
func statementName(key string) string {
	d := sha256.Sum256([]byte(key))
	return "bulkhead_one_" + hex.EncodeToString(d[:12])
}

// maxControl bounds the transaction statements (BEGIN, the binding, the
// bounds, the fence, COMMIT) one connection keeps prepared for OneRead
// runs: those every read sends, and the tenant-specific ones of the first
// few tenants it serves. controlsKey is where its CustomData keeps them:
// their names by their text, each named (hashed) once per connection
// rather than on every read.
const (
	maxControl  = 32
	controlsKey = "isolation.oneread.control"
)

// controlsOf returns the control statements the connection whose
// CustomData is data keeps prepared, names by text.
func controlsOf(data map[string]any) map[string]string {
	m, _ := data[controlsKey].(map[string]string)
	if m == nil {
		m = make(map[string]string, maxControl)
		data[controlsKey] = m
	}
	return m
}

// controlName is the name of control statement s's prepared statement.
func controlName(s string) string {
	d := sha256.Sum256([]byte("control\x00" + s))
	return "bulkhead_ctl_" + hex.EncodeToString(d[:12])
}

// keepControl reads the description of control statement s, prepared in
// this pipeline, and remembers on the connection that it is prepared.
func (tx *oneReadTx) keepControl(s string) error {
	res, err := tx.pipe.GetResults()
	if err != nil {
		return err
	}
	if _, ok := res.(*pgconn.StatementDescription); !ok {
		return fmt.Errorf("isolation: one read: got %T for a prepared control statement", res)
	}
	controlsOf(tx.conn.PgConn().CustomData())[s] = controlName(s)
	return nil
}

// forgetControl forgets the control statements conn keeps prepared, and
// deallocates them (a failure is no matter: the next reads prepare them
// again under the same names only once this succeeded or the connection
// is new).
func forgetControl(ctx context.Context, conn *pgx.Conn) {
	data := conn.PgConn().CustomData()
	prepared, _ := data[controlsKey].(map[string]string)
	delete(data, controlsKey)
	for _, name := range prepared {
		if !conn.IsClosed() {
			_ = conn.PgConn().Deallocate(ctx, name)
		}
	}
}

// duplicateStatement reports whether err is PostgreSQL refusing to prepare
// a statement under a name it already has.
func duplicateStatement(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "42P05"
}

// closeResult reads one result of pipe that returns no rows.
func closeResult(pipe *pgconn.Pipeline) error {
	res, err := pipe.GetResults()
	if err != nil {
		return err
	}
	rr, ok := res.(*pgconn.ResultReader)
	if !ok {
		return fmt.Errorf("isolation: one read: got %T", res)
	}
	_, err = rr.Close()
	return err
}

// finish reads what remains of the pipeline (the rows fn left, COMMIT,
// the sync) and leaves conn outside any transaction, or reports why not.
func (tx *oneReadTx) finish(ctx context.Context) error {
	if tx.pipe == nil {
		return nil // fn sent nothing
	}
	var err error
	if tx.rows != nil {
		tx.rows.Close()
		err = tx.rows.Err()
		if err == nil && tx.commitFresh {
			err = tx.keepControl("COMMIT")
		}
		if err == nil {
			err = closeResult(tx.pipe)
		}
		if err == nil {
			var res any
			if res, err = tx.pipe.GetResults(); err == nil {
				if _, ok := res.(*pgconn.PipelineSync); !ok {
					err = fmt.Errorf("isolation: one read: got %T for the sync", res)
				}
			}
		}
	}
	if cerr := tx.pipe.Close(); err == nil {
		err = cerr
	}
	if tx.conn.PgConn().TxStatus() != 'I' && !tx.conn.IsClosed() {
		if _, rerr := tx.conn.Exec(ctx, "ROLLBACK"); rerr != nil && err == nil {
			err = rerr
		}
	}
	cause := err
	if cause == nil {
		cause = tx.err // the statement failed before fn had its rows
	}
	if StalePlan(cause) || missingStatement(cause) || duplicateStatement(cause) {
		// One of the control statements may be gone, changed or
		// already there: prepare them all afresh next time.
		forgetControl(ctx, tx.conn)
	}
	if tx.fresh && duplicateStatement(cause) && !tx.conn.IsClosed() {
		// A statement of its name is there, unknown to the cache (a
		// deallocation that failed): make room for it next time.
		_ = tx.conn.PgConn().Deallocate(ctx, statementName(tx.key))
	}
	if StalePlan(cause) || missingStatement(cause) {
		// The statement this connection prepared no longer fits its
		// tables, or is gone: prepare it afresh next time.
		if statementsOf(tx.conn.PgConn().CustomData()).forget(tx.key) && !missingStatement(cause) && !tx.conn.IsClosed() {
			_ = tx.conn.PgConn().Deallocate(ctx, statementName(tx.key))
		}
	}
	return err
}

func (tx *oneReadTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	rows, err := tx.send(ctx, sql, args)
	if err != nil {
		tx.err = err
		return nil, err
	}
	return rows, nil
}

func (tx *oneReadTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rows, err := tx.Query(ctx, sql, args...)
	return oneRow{rows: rows, err: err}
}

func (tx *oneReadTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	rows.Close()
	return rows.CommandTag(), rows.Err()
}

func (tx *oneReadTx) Begin(context.Context) (pgx.Tx, error) { return nil, ErrNotOneRead }
func (tx *oneReadTx) Commit(context.Context) error          { return ErrNotOneRead }
func (tx *oneReadTx) Rollback(context.Context) error        { return ErrNotOneRead }
func (tx *oneReadTx) CopyFrom(context.Context, pgx.Identifier, []string, pgx.CopyFromSource) (int64, error) {
	return 0, ErrNotOneRead
}
func (tx *oneReadTx) SendBatch(_ context.Context, b *pgx.Batch) pgx.BatchResults {
	return pgx.FailedBatchResults(b, ErrNotOneRead)
}
func (tx *oneReadTx) LargeObjects() pgx.LargeObjects { return pgx.LargeObjects{} }
func (tx *oneReadTx) Prepare(context.Context, string, string) (*pgconn.StatementDescription, error) {
	return nil, ErrNotOneRead
}
func (tx *oneReadTx) Conn() *pgx.Conn { return tx.conn }

// oneRow is QueryRow's answer: the first row, or pgx.ErrNoRows.
type oneRow struct {
	rows pgx.Rows
	err  error
}

func (r oneRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}
