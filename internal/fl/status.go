package fl

// The HTTP statuses and methods of the FL API, named here rather than
// taken from net/http: the builtin runner (cmd/spry-fn) carries this
// package, and linking net/http (with crypto/tls and the rest) only for
// its constants doubled the runner's start-up (page faults, package
// initialisation), which every cold start of a builtin pays.
const (
	statusOK                          = 200
	statusCreated                     = 201
	statusBadRequest                  = 400
	statusNotFound                    = 404
	statusMethodNotAllowed            = 405
	statusConflict                    = 409
	statusGone                        = 410
	statusRequestEntityTooLarge       = 413
	statusUnprocessableEntity         = 422
	statusRequestHeaderFieldsTooLarge = 431
	statusInternalServerError         = 500
	statusBadGateway                  = 502
	statusServiceUnavailable          = 503
	statusGatewayTimeout              = 504

	methodGet    = "GET"
	methodHead   = "HEAD"
	methodPost   = "POST"
	methodPut    = "PUT"
	methodDelete = "DELETE"
)
