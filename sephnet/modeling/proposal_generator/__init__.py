"""sephnet's proposal-generator parts; importing this package registers them."""
from sephnet.modeling.proposal_generator import rpn, rpn_head  # noqa: F401
from sephnet.modeling.proposal_generator import retinanet_pg  # noqa: F401,E402
