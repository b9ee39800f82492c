"""Connecting to Temporal, and the search attributes conversations are found by."""

import logging

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.common import SearchAttributeKey

from threadchat.config import TemporalSettings

log = logging.getLogger(__name__)

SLACK_CHANNEL = SearchAttributeKey.for_keyword("SlackChannel")
SLACK_PARTICIPANTS = SearchAttributeKey.for_keyword_list("SlackParticipants")
SEARCH_ATTRIBUTES = {
    SLACK_CHANNEL.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    SLACK_PARTICIPANTS.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
}
# For `temporal server start-dev --search-attribute NAME=TYPE`.
DEV_SERVER_SEARCH_ATTRIBUTES = ["SlackChannel=Keyword", "SlackParticipants=KeywordList"]


async def connect(settings: TemporalSettings) -> Client:
    return await Client.connect(
        settings.target_host, namespace=settings.namespace, **settings.connect_options
    )


async def ensure_search_attributes(client: Client) -> None:
    """Create the custom search attributes if the namespace lacks them.

    Temporal Cloud refuses this call for API keys without admin rights; there, create the
    attributes once in the Cloud UI or with tcld, and the warning below says so.
    """
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=client.namespace)
        )
        missing = {
            name: kind
            for name, kind in SEARCH_ATTRIBUTES.items()
            if name not in existing.custom_attributes
        }
        if missing:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
            )
            log.info("created search attributes %s", ", ".join(sorted(missing)))
    except Exception as err:
        log.warning(
            "could not check or create search attributes %s (%s); create them in the "
            "namespace so /endchat can find conversations",
            ", ".join(SEARCH_ATTRIBUTES),
            err,
        )
