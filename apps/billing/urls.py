from django.urls import path

from apps.billing import api

urlpatterns = [
    path("billing/balance", api.BalanceView.as_view(), name="billing-balance"),
    path("billing/ledger", api.LedgerView.as_view(), name="billing-ledger"),
    path("billing/usage", api.UsageView.as_view(), name="billing-usage"),
    path("billing/redeem", api.RedeemView.as_view(), name="billing-redeem"),
]
