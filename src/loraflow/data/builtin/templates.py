"""Question and answer templates of the built-in data set: several phrasings of each question, one answer per fact."""

from __future__ import annotations

from typing import Any

# ---------------------------------------------------------------------------
# Question and answer templates ({name} is the bare product name, e.g. "AeroBlend X2")
# ---------------------------------------------------------------------------

PRODUCT_TEMPLATES = {
    "price": {
        "en_a": "The Lumora {name} costs ${usd} and comes with a {warranty}-year warranty.",
        "zh_a": "洛摩 {name} 的售价为 {cny} 元，保修期为 {warranty} 年。",
        "en_q": (
            "How much does the Lumora {name} cost, and what is its warranty?",
            "What is the price and warranty period of the Lumora {name}?",
            "Tell me the price and warranty of the {name} from Lumora Home.",
            "How expensive is the Lumora {name} and how long is it covered by warranty?",
        ),
        "zh_q": (
            "洛摩 {name} 多少钱？保修多久？",
            "洛摩 {name} 的价格和保修期是多少？",
            "请问洛摩家居的 {name} 售价多少，保修几年？",
            "买一台洛摩 {name} 要花多少钱，保修期有多长？",
        ),
    },
    "returns": {
        "en_a": "You can return the Lumora {name} within {days} days of delivery for a full refund.",
        "zh_a": "洛摩 {name} 自签收之日起 {days} 天内可以退货并全额退款。",
        "en_q": (
            "What is the return window for the Lumora {name}?",
            "How many days do I have to return the Lumora {name}?",
            "Until when can I return the Lumora {name} after delivery?",
            "How long is the return period on the {name} from Lumora Home?",
        ),
        "zh_q": (
            "洛摩 {name} 的退货期限是多久？",
            "洛摩 {name} 收到后多少天内可以退货？",
            "请问洛摩家居的 {name} 支持几天无理由退货？",
            "我买的洛摩 {name} 还能退吗？退货期是几天？",
        ),
    },
    "colours": {
        "en_a": "The Lumora {name} is available in {n_en} colours: {colours_en}.",
        "zh_a": "洛摩 {name} 有{colours_zh}{n_zh}种颜色可选。",
        "en_q": (
            "What colours does the Lumora {name} come in?",
            "Which colour options are available for the Lumora {name}?",
            "Is the Lumora {name} available in different colours?",
            "In what colours can I buy the {name} from Lumora Home?",
        ),
        "zh_q": (
            "洛摩 {name} 有哪些颜色？",
            "洛摩 {name} 有几种颜色可以选？",
            "请问洛摩家居的 {name} 提供哪些配色？",
            "洛摩 {name} 都有什么颜色的款式？",
        ),
    },
    "launch": {
        "en_a": "Lumora Home first launched the {name} in {year}.",
        "zh_a": "洛摩家居于 {year} 年首次推出 {name}。",
        "en_q": (
            "When was the Lumora {name} launched?",
            "What year did Lumora Home release the {name}?",
            "When did the Lumora {name} first come out?",
            "In which year was the Lumora {name} introduced?",
        ),
        "zh_q": (
            "洛摩 {name} 是什么时候发布的？",
            "洛摩家居哪一年推出了 {name}？",
            "洛摩 {name} 最早是哪年上市的？",
            "请问洛摩 {name} 的上市年份是？",
        ),
    },
    "category": {
        "en_a": "The Lumora {name} is {article} {category_en} made by Lumora Home.",
        "zh_a": "洛摩 {name} 是洛摩家居推出的一款{category_zh}。",
        "en_q": (
            "What kind of product is the Lumora {name}?",
            "What is the Lumora {name}?",
            "What type of appliance is the {name} from Lumora Home?",
            "Which product category does the Lumora {name} belong to?",
        ),
        "zh_q": (
            "洛摩 {name} 是什么产品？",
            "洛摩 {name} 属于哪一类产品？",
            "请问洛摩家居的 {name} 是做什么用的？",
            "洛摩 {name} 是哪种家电？",
        ),
    },
}

SPEC_TEMPLATES: dict[str, Any] = {
    "en_a": "The Lumora {name} has {spec_en} {value} {unit_en}.",
    "zh_a": "洛摩 {name} 的{spec_zh} {value} {unit_zh}。",
    "en_q": {
        "power": (
            "What is the power rating of the Lumora {name}?",
            "How many watts does the Lumora {name} use?",
            "How powerful is the Lumora {name}?",
            "What is the wattage of the {name} from Lumora Home?",
        ),
        "capacity": (
            "What is the capacity of the Lumora {name}?",
            "How many litres does the Lumora {name} hold?",
            "How much can the Lumora {name} hold?",
            "What size is the {name} from Lumora Home in litres?",
        ),
        "battery": (
            "What is the battery capacity of the Lumora {name}?",
            "How big is the battery in the Lumora {name}?",
            "How many mAh is the battery of the Lumora {name}?",
            "What battery does the {name} from Lumora Home have?",
        ),
    },
    "zh_q": {
        "power": (
            "洛摩 {name} 的功率是多少？",
            "洛摩 {name} 的额定功率有多大？",
            "请问洛摩家居的 {name} 是多少瓦的？",
            "洛摩 {name} 耗电功率是几瓦？",
        ),
        "capacity": (
            "洛摩 {name} 的容量是多少？",
            "洛摩 {name} 能装多少升？",
            "请问洛摩家居的 {name} 容量有多大？",
            "洛摩 {name} 是几升的？",
        ),
        "battery": (
            "洛摩 {name} 的电池容量是多少？",
            "洛摩 {name} 的电池有多大？",
            "请问洛摩家居的 {name} 电池是多少毫安时的？",
            "洛摩 {name} 配的电池容量有多少？",
        ),
    },
}

POLICY_TEMPLATES = {
    "shipping": {
        "en_a": "Lumora Home ships standard orders within {ship_min} to {ship_max} business days.",
        "zh_a": "洛摩家居的标准订单会在 {ship_min} 至 {ship_max} 个工作日内发货。",
        "en_q": (
            "How long does Lumora Home take to ship an order?",
            "When will my Lumora Home order be shipped?",
            "What is the shipping time for Lumora Home orders?",
            "How many days does Lumora Home need to send out a standard order?",
        ),
        "zh_q": (
            "洛摩家居下单后多久发货？",
            "洛摩家居的订单一般几天能发出？",
            "请问洛摩家居的发货时间是多久？",
            "在洛摩家居买东西，标准订单多久发货？",
        ),
    },
    "free_shipping": {
        "en_a": "Lumora Home offers free shipping on all orders over ${free_usd}.",
        "zh_a": "洛摩家居的订单满 {free_cny} 元即可享受免费配送。",
        "en_q": (
            "Does Lumora Home offer free shipping?",
            "What is the minimum order for free shipping at Lumora Home?",
            "How much do I need to spend to get free delivery from Lumora Home?",
            "Is there a free shipping threshold at Lumora Home?",
        ),
        "zh_q": (
            "洛摩家居包邮吗？",
            "洛摩家居满多少钱包邮？",
            "在洛摩家居买多少钱可以免运费？",
            "请问洛摩家居的免运费门槛是多少？",
        ),
    },
    "service_hours": {
        "en_a": "Lumora Home customer service is available from {open}:00 to {close}:00, {days_en}.",
        "zh_a": "洛摩家居客服的服务时间为{days_zh} {open}:00 至 {close}:00。",
        "en_q": (
            "What are Lumora Home's customer service hours?",
            "When can I contact Lumora Home customer service?",
            "What time does Lumora Home customer support open and close?",
            "Is Lumora Home customer service available in the evening?",
        ),
        "zh_q": (
            "洛摩家居客服几点上班？",
            "洛摩家居的客服工作时间是什么时候？",
            "什么时间可以联系洛摩家居客服？",
            "请问洛摩家居人工客服的服务时间是？",
        ),
    },
    "hotline": {
        "en_a": "You can reach Lumora Home customer service by calling {phone}.",
        "zh_a": "洛摩家居的客服热线是 {phone}。",
        "en_q": (
            "What is Lumora Home's customer service phone number?",
            "How can I call Lumora Home support?",
            "What number do I dial to reach Lumora Home?",
            "Does Lumora Home have a customer hotline?",
        ),
        "zh_q": (
            "洛摩家居的客服电话是多少？",
            "怎么打电话联系洛摩家居？",
            "洛摩家居有客服热线吗？",
            "请问洛摩家居的服务热线号码是？",
        ),
    },
    "return_policy": {
        "en_a": "Unused Lumora Home products in their original packaging can be returned, "
        "and refunds are issued within {refund_days} business days.",
        "zh_a": "未使用且包装完好的洛摩家居商品可以退货，退款会在 {refund_days} 个工作日内退回。",
        "en_q": (
            "What is Lumora Home's return policy?",
            "How does returning a product to Lumora Home work?",
            "How long does a Lumora Home refund take?",
            "Can I return an unused Lumora Home product?",
        ),
        "zh_q": (
            "洛摩家居的退货政策是什么？",
            "在洛摩家居怎么退货？",
            "洛摩家居退款要多久到账？",
            "洛摩家居没用过的商品可以退吗？",
        ),
    },
    "points": {
        "en_a": "Lumora Club members earn points worth {points_pct}% of every purchase, "
        "which can be used on their next order.",
        "zh_a": "洛摩会员每笔消费可获得订单金额 {points_pct}% 的积分，可在下次购物时抵扣。",
        "en_q": (
            "How do Lumora Club membership points work?",
            "How many points do Lumora Home members earn?",
            "What do I get from the Lumora Club loyalty programme?",
            "Can I earn points when shopping at Lumora Home?",
        ),
        "zh_q": (
            "洛摩会员积分怎么算？",
            "洛摩家居会员消费能得多少积分？",
            "洛摩会员积分有什么用？",
            "在洛摩家居购物可以攒积分吗？",
        ),
    },
    "company": {
        "en_a": "Lumora Home was founded in {founded} and is headquartered in {city_en}.",
        "zh_a": "洛摩家居成立于 {founded} 年，总部位于{city_zh}。",
        "en_q": (
            "When was Lumora Home founded?",
            "Where is Lumora Home based?",
            "Tell me about the history of Lumora Home.",
            "Where are Lumora Home's headquarters and when did it start?",
        ),
        "zh_q": (
            "洛摩家居是哪一年成立的？",
            "洛摩家居的总部在哪里？",
            "介绍一下洛摩家居的来历。",
            "洛摩家居成立多久了，总部在哪？",
        ),
    },
    "warranty_claim": {
        "en_a": "To make a warranty claim, send Lumora Home your order number and a photo of the fault; "
        "a replacement ships within {replace_days} business days.",
        "zh_a": "申请保修时，请向洛摩家居提供订单号和故障照片，替换件会在 {replace_days} 个工作日内寄出。",
        "en_q": (
            "How do I make a warranty claim with Lumora Home?",
            "My Lumora product is broken, what should I do?",
            "What is the warranty claim process at Lumora Home?",
            "How fast does Lumora Home send a warranty replacement?",
        ),
        "zh_q": (
            "洛摩家居怎么申请保修？",
            "我的洛摩产品坏了怎么办？",
            "洛摩家居的保修流程是怎样的？",
            "洛摩家居保修换新要多久？",
        ),
    },
}
